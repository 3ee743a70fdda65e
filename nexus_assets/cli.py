"""The ``nexus-assets`` console script.

- ``nexus-assets demo``: materialise the main job for every catalog asset over its catalogued range,
  one Dagster run per asset, side by side over the cores (:mod:`nexus_assets.demo`), recorded in
  the local instance (the README's first command);
- ``nexus-assets qml-server``: a QML-compatible HTTP server on loopback (sandbox and synthetic projects);
- ``nexus-assets site``: the dashboard's files over HTTP on loopback;
- ``nexus-assets models list|show|verify|sign|register``: the ML model registry (docs/ml.md#the-registry).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import signal
import sys
import threading
from pathlib import Path

__all__ = ["build_parser", "main"]


def _instance():
    """The project's instance: ``$DAGSTER_HOME``'s if set; else ``./.dagster_home``, configured by ``./dagster.yaml``.

    The same folder that ``dagster dev`` and ``dagster asset materialize`` started here use without
    ``DAGSTER_HOME`` (:func:`nexus_assets.instance.project_home`), so every command's runs land in
    the instance the UI shows, and the configuration is read where it lives (never copied).
    """
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    from nexus_assets.instance import PROJECT_HOME

    if os.environ.get("DAGSTER_HOME"):
        return DagsterInstance.get()
    home = Path(PROJECT_HOME).resolve()
    home.mkdir(exist_ok=True)
    config_dir = Path.cwd() if Path("dagster.yaml").is_file() else home
    return DagsterInstance.from_ref(InstanceRef.from_dir(str(home), config_dir=str(config_dir)))


def _demo(args: argparse.Namespace) -> int:
    from dotenv import load_dotenv

    load_dotenv(Path.cwd() / ".env", override=False)  # as `dagster dev` does: .env in the current folder
    from nexus_assets.demo import default_jobs, run_instruments
    from nexus_assets.progress import DemoProgress
    from nexus_assets.settings import Settings

    settings = Settings.from_env()
    catalog = settings.catalog()
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    start = args.start or catalog.start_date
    end = args.end or (catalog.end_date or yesterday)
    if end < start:  # would record empty "successful" runs
        print(f"nexus-assets demo: the range is reversed: --end {end} is before --start {start}", file=sys.stderr)
        return 2
    keys = catalog.keys
    jobs = args.jobs or default_jobs(len(keys))
    print(f"catalog   {catalog.path} ({len(keys)} assets: {', '.join(keys)})")
    days = (end - start).days + 1
    print(f"range     {start} .. {end}  ->  {len(keys) * days} partitions ({len(keys)} assets x {days} days)")
    print(f"data      {settings.data_dir}")
    print(f"workers   {jobs} (one run per asset, {jobs} at a time)", flush=True)
    interactive = sys.stdout.isatty()
    progress = DemoProgress(sys.stdout, interactive=interactive)
    # On a terminal the bar says what each step did, so Dagster's own INFO lines would only break it.
    log_level = args.log_level or ("WARNING" if interactive else "INFO")

    def report(outcome) -> None:
        status = "success" if outcome.success else "FAILED"
        progress.say(f"run       {outcome.key}: {outcome.run_id} {status} in {outcome.seconds:.1f}s")
        for message in outcome.errors:
            progress.say(message)

    # One run per asset, as a UI backfill of a date range splits it: each run pulls its asset
    # once, and Dagster's per-event bookkeeping stays cheaper than in one run holding every key.
    outcomes = run_instruments(keys, start, end, progress=progress, open_instance=_instance, log_level=log_level,
                               jobs=jobs, report=report)
    print(_cpu_line(progress.cpu_by_step()))
    from nexus_assets.instance import NexusInstance

    with _instance() as instance:
        home = str(Path(instance.root_directory).resolve())
        project_instance = isinstance(instance, NexusInstance)
        print(f"instance  {home}")
    failed = [outcome.key for outcome in outcomes if not outcome.success]
    if failed:
        print(f"FAILED    {', '.join(failed)}")
        return 1
    from nexus_assets.defs.dashboard import rebuild_site, site_root

    if (site_root(settings) / "index.html").exists():  # runs that ended together: the index from every page
        rebuild_site(site_root(settings), catalog)
    from upath import UPath

    from nexus_assets.definitions import MAIN_JOB, defs
    from nexus_assets.demo import stored_lines, ui_command

    data = UPath(settings.data_dir)  # a folder or an object store (NEXUS_DATA_DIR=s3://...)
    job = defs.resolve_job_def(MAIN_JOB)
    ran = job.asset_layer.executable_asset_keys
    for line in stored_lines([key.path for key in job.asset_layer.asset_graph.toposorted_asset_keys if key in ran], data):
        print(line)
    index = data / "dashboard" / "index.html"
    if index.is_file() and settings.data_is_local:
        print(f"site      {Path(settings.data_dir, 'dashboard', 'index.html').resolve()}   "
              "# the dashboard: open it in a browser (works offline)")
    elif index.is_file():
        print(f"site      {index}   # the dashboard, in the object store")
    command = ui_command(str(Path.cwd().resolve()), home, dagster_home_set=bool(os.environ.get("DAGSTER_HOME")),
                         config_in_folder=Path("dagster.yaml").is_file(), project_instance=project_instance)
    print(f"next      {command}   # the runs and the partition grid, in the demo's instance {home}")
    return 0


def _cpu_line(by_step: dict[str, float]) -> str:
    """The demo's CPU time (this process and its finished workers, user + system) and its share per
    step summed over the instruments: the figure a shared machine's load does not inflate."""
    times = os.times()
    total = times.user + times.system + times.children_user + times.children_system
    steps = ", ".join(f"{step} {seconds:.1f}s" for step, seconds in sorted(by_step.items(), key=lambda kv: -kv[1]))
    return f"cpu       {total:.1f}s in all; steps: {steps or 'none'}"


def _qml_server(args: argparse.Namespace) -> int:
    from nexus_assets.catalog import bundled_catalog_path, load_catalog
    from nexus_assets.qml.faults import load_faults
    from nexus_assets.qml.server import QMLServer, projects_from_catalogs

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s")
    api_key = os.environ.get(args.api_key_env)
    if not api_key:
        print(f"qml-server: set {args.api_key_env} in the environment to the API key clients must send", file=sys.stderr)
        return 2
    paths = args.catalog or [str(bundled_catalog_path("sandbox")), str(bundled_catalog_path("synthetic"))]
    projects = projects_from_catalogs(load_catalog(p) for p in paths)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"qml-server: warning: listening on {args.host}, not loopback", file=sys.stderr)
    try:
        faults = load_faults(args.faults) if args.faults else []
    except ValueError as exc:
        print(f"qml-server: {exc}", file=sys.stderr)
        return 2
    try:
        server = QMLServer(projects, api_key, host=args.host, port=args.port, faults=faults,
                           models_only=args.models_only)
    except OSError as exc:
        return _cannot_listen("qml-server", args, exc)
    print(f"qml-server listening on {server.url} serving projects {sorted(projects)}", flush=True)
    if faults:
        print(f"qml-server fault script: {len(faults)} fault(s), one per data request: {', '.join(f.kind for f in faults)}", flush=True)
    return _serve(server.httpd)


def _cannot_listen(command: str, args: argparse.Namespace, exc: OSError) -> int:
    """One line on stderr for a server that cannot listen (a busy port: :class:`~nexus_assets.serving.PortInUse`)."""
    from nexus_assets.serving import PortInUse

    reason = str(exc) if isinstance(exc, PortInUse) else f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
    print(f"{command}: {reason}", file=sys.stderr)
    return 2


def _serve(httpd) -> int:
    """Serve until SIGTERM or Ctrl-C / SIGINT, then close the socket; exit status 0."""
    # shutdown() waits for serve_forever() to return, so it must not run on the serving thread
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=httpd.shutdown, daemon=True).start())
    # SIGINT stops it even when a script started it in the background: a non-interactive shell
    # starts background jobs with SIGINT ignored, and Python then leaves it so
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0


def _site(args: argparse.Namespace) -> int:
    """Serve the dashboard site over HTTP on loopback, so the Dagster UI's page links open."""
    from dotenv import load_dotenv

    load_dotenv(Path.cwd() / ".env", override=False)
    from nexus_assets.serving import site_server
    from nexus_assets.settings import Settings

    settings = Settings.from_env()
    data_dir = settings.data_dir
    if not settings.data_is_local:
        print(f"site: NEXUS_DATA_DIR is {data_dir}, not a folder; `site` serves a local folder. Serve the "
              "dashboard/ prefix with the store's own web hosting, or copy it to a folder and point "
              "NEXUS_DATA_DIR there", file=sys.stderr)
        return 2
    root = Path(data_dir) / "dashboard"
    if not (root / "index.html").is_file():
        print(f"site: no dashboard under {root} yet; run `nexus-assets demo` (or materialise `dashboard`) first",
              file=sys.stderr)
        return 2

    try:
        httpd = site_server(root, args.host, args.port)
    except OSError as exc:
        return _cannot_listen("site", args, exc)
    host, port = httpd.server_address[:2]
    print(f"site      serving {root} at http://{host}:{port}/  (Ctrl-C stops)", flush=True)
    print(f"          for page links in the Dagster UI: NEXUS_SITE_URL=http://{host}:{port} dagster dev", flush=True)
    return _serve(httpd)


def _models_settings():
    from dotenv import load_dotenv

    load_dotenv(Path.cwd() / ".env", override=False)
    from nexus_assets.settings import Settings

    return Settings.from_env()


def _known_asset(settings, asset: str | None) -> None:
    """Refuse an asset that is neither in the catalog nor in the registry (a typo would otherwise
    answer "no models" and exit 0: a CI gate on ``models verify <typo>`` would pass)."""
    from nexus_assets.ml_registry import RegistryError, registry_root

    if asset is None:
        return
    catalog = settings.catalog()
    if asset not in catalog.keys and not (registry_root(settings.data_dir) / asset).is_dir():
        raise RegistryError(f"asset {asset!r} is not in the catalog {catalog.path} ({', '.join(catalog.keys)}) "
                            "nor in the registry")


def _models_list(args: argparse.Namespace) -> int:
    from nexus_assets.ml_registry import scan_manifests

    settings = _models_settings()
    _known_asset(settings, args.asset)
    manifests, problems = scan_manifests(settings.data_dir, args.asset)
    for problem in problems:  # listed, not hidden: `models verify` says the same
        print(problem.line(), file=sys.stderr)
    if not manifests:
        print("no models in the registry" + (f" for {args.asset}" if args.asset else ""))
        return 1 if problems else 0
    print("asset  version  horizon  valid_from  source  sha256  mlp_val_accuracy/brier  baseline_val_accuracy/brier")
    for m in manifests:
        val = m.get("validation") or {}

        def scores(name, val=val):
            s = val.get(name)
            return f"{s['accuracy']:.3f}/{s['brier']:.3f}" if s else "-"

        print(f"{m['asset']}  {m['version']}  {m['horizon']}  {m['valid_from']}  {m['source']}  {m['sha256'][:12]}  "
              f"{scores('mlp')}  {scores('baseline_logistic')}")
    return 1 if problems else 0


def _models_show(args: argparse.Namespace) -> int:
    import json

    from nexus_assets.ml_registry import read_manifest

    print(json.dumps(read_manifest(_models_settings().data_dir, args.asset, args.version), indent=2, sort_keys=True))
    return 0


def _models_check(args: argparse.Namespace, check) -> int:
    """``verify`` or ``sign``: one line per model, exit 1 on any ``BAD``."""
    settings = _models_settings()
    _known_asset(settings, args.asset)
    results = check(settings.data_dir, args.asset, args.version)
    for result in results:
        print(result.line())
    if not results:
        print("no models in the registry" + (f" for {args.asset}" if args.asset else ""))
    return 0 if all(r.ok for r in results) else 1


def _models_verify(args: argparse.Namespace) -> int:
    from nexus_assets.ml_registry import verify

    return _models_check(args, verify)


def _models_sign(args: argparse.Namespace) -> int:
    import functools

    from nexus_assets.ml_registry import sign

    return _models_check(args, functools.partial(sign, mode=args.mode))


def _models_register(args: argparse.Namespace) -> int:
    from nexus_assets.core.contract import FEATURE_COLUMNS
    from nexus_assets.core.features import CALENDAR_FEATURES, model_features
    from nexus_assets.core.ml_training import library_versions
    from nexus_assets.defs.ml import has_volume
    from nexus_assets.ml_registry import RegistryError, register_model

    settings = _models_settings()
    catalog = settings.catalog()
    if args.asset not in catalog.keys:
        raise RegistryError(f"asset {args.asset!r} is not in the catalog {catalog.path} ({', '.join(catalog.keys)})")
    features = args.features.split(",")
    known = (*FEATURE_COLUMNS, *CALENDAR_FEATURES)
    unknown = [f for f in features if f.strip() not in known]
    if unknown:
        raise RegistryError(f"--features: unknown feature(s) {', '.join(unknown)}; known: {', '.join(known)}")
    entry = catalog[args.asset]
    if not has_volume(entry):  # the model would never get a probability: its volume inputs are always NaN
        volume = [f for f in features if f.strip() in set(model_features(True)) - set(model_features(False))]
        if volume:
            raise RegistryError(f"--features: {', '.join(volume)} need a volume series, which {args.asset} has none of "
                                f"(source {entry.source!r}); the model would never give a probability")
    if args.horizon not in entry.ml_horizons:
        raise RegistryError(f"--horizon {args.horizon}: {args.asset} predicts horizons {list(entry.ml_horizons)} "
                            "(the catalog's ml_horizons); a model for another horizon would never serve")
    valid_from = args.valid_from or dt.datetime.now(dt.UTC).date()
    manifest = register_model(settings.data_dir, asset=args.asset, horizon=args.horizon, model_file=args.file,
                              features=features, valid_from=valid_from, version=args.version,
                              libraries={name: version for name, version in library_versions().items()
                                         if name in ("onnx", "onnxruntime")})  # what checked it; `producer` made it
    print(f"registered {manifest['asset']} {manifest['version']} (horizon {manifest['horizon']}, valid from "
          f"{manifest['valid_from']}, sha256 {manifest['sha256']})")
    return 0


def _iso_date(text: str) -> dt.date:
    """An argparse type: a calendar date as YYYY-MM-DD (argparse turns the error into one usage line)."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line: every command and every option with its help text (a test walks it)."""
    parser = argparse.ArgumentParser(
        prog="nexus-assets", description="The Nexus v2 forecasting pipeline as a Dagster asset graph: the main job, "
        "a QML-compatible server and the dashboard site. `nexus-assets COMMAND --help` for a command's options.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="materialise the main job over the catalog's range (NEXUS_CATALOG, NEXUS_DATA_DIR)",
                               description="Materialise the main job over the catalog's range, one run per catalog asset, "
                               "as many side by side as there are cores.")
    demo.add_argument("--start", type=_iso_date, metavar="YYYY-MM-DD", help="first day (default: the catalog's earliest start_date)")
    demo.add_argument("--end", type=_iso_date, metavar="YYYY-MM-DD", help="last day (default: the catalog's last end_date, else yesterday)")
    demo.add_argument("--jobs", type=_positive_int, metavar="N",
                      help="runs side by side, one worker process each (default: one per core, at most one per asset; "
                           "env NEXUS_DEMO_JOBS); 1 runs the assets one after another in this process")
    demo.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                      help="Dagster's console log level on stderr (default: WARNING when stdout is a terminal, "
                           "where a progress bar shows the steps; else INFO, one line per step)")
    demo.set_defaults(run=_demo)

    server = commands.add_parser("qml-server", help="serve sandbox/synthetic projects over a QML-compatible HTTP API",
                                 description="Serve sandbox/synthetic projects over a QML-compatible HTTP API (key: $QML_API_KEY).")
    server.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback)")
    server.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765; 0 picks a free one)")
    server.add_argument("--catalog", action="append", help="catalog(s) whose sandbox/synthetic assets to serve (repeatable)")
    server.add_argument("--api-key-env", default="QML_API_KEY", help="environment variable holding the API key")
    server.add_argument("--verbose", action="store_true", help="log every request line (never headers)")
    server.add_argument("--faults", metavar="FILE", help="fault script: a JSON list of fault objects, consumed one per data request")
    server.add_argument("--models-only", action="store_true",
                        help="serve only /get_qml_models, as today's quantum_ml does (the horizon-forecast and "
                        "model-metadata routes answer 404)")
    server.set_defaults(run=_qml_server)

    site = commands.add_parser("site", help="serve the dashboard ($NEXUS_DATA_DIR/dashboard) over HTTP on loopback",
                               description="Serve the dashboard ($NEXUS_DATA_DIR/dashboard) over HTTP on loopback.")
    site.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback)")
    site.add_argument("--port", type=int, default=8787, help="port to listen on (default 8787; 0 picks a free one)")
    site.set_defaults(run=_site)

    models = commands.add_parser("models", help="the ML model registry: list, show, verify, sign, register (NEXUS_DATA_DIR)",
                                 description="The ML model registry under $NEXUS_DATA_DIR/ml_registry (docs/ml.md).")
    model_commands = models.add_subparsers(dest="models_command", required=True, metavar="SUBCOMMAND")
    listing = model_commands.add_parser("list", help="every model's manifest, one line each")
    listing.add_argument("--asset", help="only this catalog asset's models")
    listing.set_defaults(run=_models_list)
    show = model_commands.add_parser("show", help="one model's manifest as JSON")
    show.add_argument("asset", help="catalog asset key")
    show.add_argument("version", help="model version")
    show.set_defaults(run=_models_show)
    check = model_commands.add_parser("verify", help="check model files against their manifests' SHA-256 (exit 1 on any mismatch)")
    signing = model_commands.add_parser(
        "sign", help="sign manifests with NEXUS_MODEL_SIGNING_KEY (once, when signing is turned on)",
        description="Sign the registry's manifests (HMAC-SHA256) with the key in NEXUS_MODEL_SIGNING_KEY, each only "
        "if its model file still matches its manifest's SHA-256. With the key set, every load and `verify` refuses "
        "an unsigned or wrongly signed manifest, and new models are signed as they are written (docs/ml.md).")
    how = signing.add_mutually_exclusive_group()
    how.add_argument("--force", action="store_const", dest="mode", const="force",
                     help="also re-sign manifests whose signature does not match (after checking them; a key rotation)")
    how.add_argument("--remove", action="store_const", dest="mode", const="remove",
                     help="take the (valid) signatures off: turning signing off")
    signing.set_defaults(mode="sign")
    for command, run in ((check, _models_verify), (signing, _models_sign)):
        command.add_argument("asset", nargs="?", help="only this asset's models")
        command.add_argument("version", nargs="?", help="only this version")
        command.set_defaults(run=run)
    register = model_commands.add_parser(
        "register", help="add an externally trained ONNX model with its feature list",
        description="Add an externally trained ONNX model (PyTorch, TensorFlow via tf2onnx, scikit-learn via skl2onnx): "
        "one float32 or float64 input of rows x the feature count (any batch size, or a fixed one), and a probability "
        "of an up move: an (n,), (n, 1) or (n, 2) float output, or scikit-learn's probability map (class 1 = up). "
        "Logits are refused. Weights in a side file (<file>.data, PyTorch's default exporter) are folded into the "
        "stored file (docs/ml.md).")
    register.add_argument("--asset", required=True, help="catalog asset key")
    register.add_argument("--horizon", required=True, type=_positive_int, help="observations ahead the model predicts")
    register.add_argument("--file", required=True, metavar="MODEL.onnx",
                          help="the ONNX model file (and its external data file beside it, if it has one)")
    register.add_argument("--features", required=True, metavar="f1,f2,...",
                          help="the features table's columns the model reads, in input order")
    register.add_argument("--valid-from", type=_iso_date, metavar="YYYY-MM-DD",
                          help="first date the model may serve (default: today, UTC)")
    register.add_argument("--version", help="version name (default: registered-<valid_from>-h<horizon>-<sha256[:8]>)")
    register.set_defaults(run=_models_register)

    from nexus_assets.api.commands import add_commands  # `api` and `keys`: the serving API (issue 12)

    add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    from nexus_assets.catalog import CatalogError
    from nexus_assets.ml_registry import RegistryError
    from nexus_assets.settings import SettingsError

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (CatalogError, SettingsError, RegistryError) as exc:  # the operator's input: one line that names it
        command = " ".join(filter(None, [args.command, getattr(args, "models_command", None)]))
        print(f"nexus-assets {command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
