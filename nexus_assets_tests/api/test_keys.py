"""API keys: shown once, stored only as an HMAC under a server secret, checked in constant time."""

import os
import sqlite3
import stat

import pytest

from nexus_assets.api import keys as keys_module
from nexus_assets.api.keys import KeyStore, KeyStoreError, normalise_rate


def test_a_key_is_stored_only_as_its_hmac_and_verifies(tmp_path):
    store = KeyStore(tmp_path)
    key = store.create("alice", None)
    raw = (tmp_path / "api_keys.sqlite").read_bytes()
    assert key.encode() not in raw and key.split("_", 2)[-1].encode() not in raw  # the secret part (it may hold "_")
    for name in ("api_keys.sqlite", "api_keys.secret"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600
    outcome, record = store.verify(key)
    assert outcome == "ok" and record.name == "alice" and record.assets is None and record.may_see("anything")
    # the digest is an HMAC under the server secret: the database alone does not let one test a key
    import hashlib
    import hmac
    secret = (tmp_path / "api_keys.secret").read_bytes()
    assert record.digest == hmac.new(secret, key.encode(), hashlib.sha256).digest()
    assert record.digest != hashlib.sha256(key.encode()).digest()


def test_wrong_unknown_malformed_and_revoked_keys(tmp_path):
    store = KeyStore(tmp_path)
    key = store.create("bob", ("9001_SP500",), "10/min")
    assert store.verify(key[:-1] + ("A" if key[-1] != "A" else "B")) == ("unknown", None)  # one character off
    assert store.verify("nxk_0000000000000000_" + "A" * 43) == ("unknown", None)  # unknown id
    assert store.verify("not a key") == ("unknown", None)
    assert store.verify(key + " ") == ("unknown", None)  # the store compares exactly; trimming is HTTP's job
    store.revoke("bob")
    outcome, record = store.verify(key)
    assert outcome == "revoked" and record.name == "bob"


def test_comparison_is_constant_time_and_unknown_ids_take_the_same_path(tmp_path, monkeypatch):
    store = KeyStore(tmp_path)
    key = store.create("carol", None)
    compared = []
    real = keys_module.hmac.compare_digest
    monkeypatch.setattr(keys_module.hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))
    store.verify(key)
    store.verify("nxk_ffffffffffffffff_" + "B" * 43)
    store.verify("garbage")
    assert len(compared) == 3  # every check, known id or not, is one compare_digest of two digests
    assert all(len(a) == len(b) == 32 for a, b in compared)


def test_another_process_creating_or_revoking_is_seen_at_the_next_check(tmp_path):
    server, cli = KeyStore(tmp_path), KeyStore(tmp_path)
    assert server.verify("nxk_0000000000000000_" + "A" * 43)[0] == "unknown"  # no database yet
    key = cli.create("dave", None)
    assert server.verify(key)[0] == "ok"
    cli.revoke("dave")
    assert server.verify(key)[0] == "revoked"


def test_names_are_unique_and_revoking_an_unknown_name_fails(tmp_path):
    store = KeyStore(tmp_path)
    store.create("erin", None)
    with pytest.raises(KeyStoreError, match="exists already"):
        store.create("erin", None)
    with pytest.raises(KeyStoreError, match="no key named"):
        store.revoke("frank")
    with pytest.raises(KeyStoreError, match="name"):
        store.create("../etc", None)


def test_list_never_holds_the_key_and_last_used_is_recorded(tmp_path):
    store = KeyStore(tmp_path)
    key = store.create("gina", ("A", "B"), "5/second")
    outcome, record = store.verify(key)
    store.touch(record)
    [listed] = store.records()
    assert listed.last_used is not None and listed.scope == "A,B" and listed.rate == "5/second"
    assert key not in repr(listed)
    rows = sqlite3.connect(tmp_path / "api_keys.sqlite").execute("SELECT * FROM api_keys").fetchall()
    assert not any(key in str(value) for row in rows for value in row)


@pytest.mark.parametrize("text, canonical", [
    ("100/min", "100/minute"), ("100/minute;1000/hour", "100/minute;1000/hour"), ("5 per second", "5/second"),
    ("10/h", "10/hour"), ("2/30 seconds", "2/30 second"), ("1000/day", "1000/day"),
])
def test_rates_in_the_forms_people_type(text, canonical):
    assert normalise_rate(text) == canonical


@pytest.mark.parametrize("text", ["", "fast", "100", "0/minute", "100/fortnight", "-1/min"])
def test_bad_rates_are_refused(text):
    with pytest.raises(KeyStoreError):
        normalise_rate(text)
