"""Escaping, JSON data blocks and the Content-Security-Policy."""

import base64
import hashlib
import html
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nexus_assets.core.dashboard.markup import (
    attrs,
    content_security_policy,
    json_script,
    plotly_text,
    script_hash,
    text,
)


def test_text_escapes_markup_and_quotes():
    assert text('<img src=x onerror="alert(1)">&\'') == "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;&#x27;"


@given(st.one_of(st.text(alphabet=st.sampled_from("ab1.-&<>\"' \u00e9")), st.text(), st.integers(), st.floats(),
                 st.none()))
def test_text_is_html_escape_of_the_value(value):
    """The fast path (nothing to escape) gives what the obvious reference gives."""
    assert text(value) == html.escape(str(value), quote=True)


def test_attrs_escape_values_and_name_attributes():
    assert attrs(class_="a b", data_field="x", data_value='"><b>', title=None) == (
        ' class="a b" data-field="x" data-value="&quot;&gt;&lt;b&gt;"'
    )


def test_plotly_text_escapes_tags_plotly_would_render():
    assert plotly_text("<b>bold</b> & <a href='javascript:x'>") == "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;a href='javascript:x'&gt;"


@pytest.mark.slow  # over 1 s: the whole suite runs it, the fast subset does not
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                    | st.text(), lambda children: st.lists(children) | st.dictionaries(st.text(), children),
                    max_leaves=20))
def test_json_script_round_trips_and_never_closes_its_element(payload):
    block = json_script("data", payload)
    body = re.fullmatch(r'<script type="application/json" id="data">(.*)</script>', block, re.S).group(1)
    assert "<" not in body and ">" not in body and "&" not in body
    assert json.loads(body) == payload


def test_json_script_sorts_keys_and_refuses_nan():
    assert json_script("d", {"b": 1, "a": [2]}) == '<script type="application/json" id="d">{"a":[2],"b":1}</script>'
    with pytest.raises(ValueError):
        json_script("d", {"x": float("nan")})
    assert "\\u003c/script\\u003e" in json_script("d", "</script><script>alert(1)</script>")


def test_script_hash_is_the_csp_sha256_of_the_text():
    digest = base64.b64encode(hashlib.sha256(b"alert(1)").digest()).decode()
    assert script_hash("alert(1)") == f"'sha256-{digest}'"


def test_policy_without_inline_scripts_runs_no_script():
    policy = content_security_policy()
    assert "script-src 'none'" in policy and "'self'" not in policy.split("script-src")[1].split(";")[0]
    assert "object-src 'none'" in policy and "base-uri 'none'" in policy and "connect-src 'none'" in policy
