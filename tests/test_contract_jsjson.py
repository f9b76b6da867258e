from __future__ import annotations

import hashlib
import json

import pytest

from k2node.contract.jsjson import js_number, sha256_hex, stringify

# Expected strings are what JavaScript's JSON.stringify / String(n) print for these values.
NUMBERS = [
    (0, "0"),
    (-0.0, "0"),
    (1.0, "1"),
    (123.456, "123.456"),
    (-1.5, "-1.5"),
    (0.1 + 0.2, "0.30000000000000004"),
    (1e21, "1e+21"),
    (1.5e22, "1.5e+22"),
    (1e20, "100000000000000000000"),
    (123456789012345680000.0, "123456789012345680000"),
    (0.000001, "0.000001"),
    (0.0000012, "0.0000012"),
    (1e-7, "1e-7"),
    (1.25e-10, "1.25e-10"),
    (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
    (float("nan"), "null"),
    (float("inf"), "null"),
    (2**60, "1152921504606846976"),
]


@pytest.mark.parametrize(("value", "expected"), NUMBERS)
def test_numbers_format_as_javascript(value: float, expected: str) -> None:
    assert js_number(value) == expected


def test_objects_keep_insertion_order_and_compact_separators() -> None:
    value = {"b": 1, "a": [True, False, None, "x"], "c": {"z": 0.5, "y": {}}}
    assert stringify(value) == '{"b":1,"a":[true,false,null,"x"],"c":{"z":0.5,"y":{}}}'


def test_strings_escape_like_javascript() -> None:
    assert stringify('a"q\\b\n\t\x01\x7f') == '"a\\"q\\\\b\\n\\t\\u0001\x7f"'
    assert stringify("ünïcödé ✓ 😀") == '"ünïcödé ✓ 😀"'
    # a lone surrogate is escaped (well-formed JSON.stringify, ES2019)
    assert stringify(json.loads('"\\ud800x"')) == '"\\ud800x"'


def test_every_ascii_character_in_a_string_prints_as_javascript_prints_it() -> None:
    # the plain-ASCII fast path and the escaping one must agree character by character
    # (JSON.stringify escapes quotes, backslashes and codes below 0x20, \b \f \n \r \t by name)
    named = {"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    for code in range(128):
        char = chr(code)
        if char in named:
            inner = named[char]
        elif char in '"\\':
            inner = "\\" + char
        elif code < 0x20:
            inner = f"\\u{code:04x}"
        else:
            inner = char
        assert stringify(f"k{char}k") == f'"k{inner}k"', code
        assert stringify({f"k{char}": 1}) == f'{{"k{inner}":1}}', code
        assert stringify({f"k{char}": [1]}) == f'{{"k{inner}":[1]}}', code


def test_flat_objects_take_the_fast_path_only_when_exact() -> None:
    assert stringify({"v": "a\ud800", "n": -3, "t": True, "z": None}) == (
        '{"v":"a\\ud800","n":-3,"t":true,"z":null}'
    )
    assert stringify({"big": 2**60, "f": 1e21, "g": 1.0}) == (
        '{"big":1152921504606846976,"f":1e+21,"g":1}'
    )


def test_unsupported_values_are_refused() -> None:
    with pytest.raises(TypeError):
        stringify({"a": object()})


def test_sha256_hex_hashes_utf8() -> None:
    assert sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_hex("✓") == hashlib.sha256(b"\xe2\x9c\x93").hexdigest()
