# -*- coding: utf-8 -*-
"""minijson against json.loads on a fixed table, and a malformed corpus that must all raise."""
import json
import sys
import unittest

import _helpers  # noqa: F401 - puts shoal-client on sys.path
from shoal_client import minijson
from shoal_client.minijson import JSONError, loads

VALID = [
    u'{}', u'[]', u'0', u'-0', u'-0.0', u'1', u'-1', u'123456789012345678901234567890', u'1.5', u'-1.5e3',
    u'1E5', u'1e-5', u'1E+2', u'0.000001', u'1e400', u'-1e400', u'2.5e-400', u'true', u'false', u'null',
    u'""', u'"abc"', u'" \\" \\\\ \\/ \\b \\f \\n \\r \\t "', u'"\\u0041\\u00e9\\u20ac"', u'"\\u0000"',
    u'"\\ud83d\\ude00"', u'"\\uD83D\\uDE00"', u'"\\ud800"', u'"\\udc00"', u'"\\ud800x"', u'"\\ud800\\u0041"',
    u'"\\ud800\\ud800\\udc00"', u'"\\udc00\\ud800"', u'"h\\u00e9llo w\\u00f6rld"', u'"\u00e9\u4e2d\U0001f600"',
    u'"\x7f"', u'"\ud800"', u' \t\n\r[ 1 , 2 ,\n3 ] \r\n', u'{"a": {"b": [1, {"c": null}]}}',
    u'{"a": 1, "a": 2}', u'{"": ""}', u'[[[[[]]]]]', u'{"0": {"hostname": "squid.example.org", '
    u'"squid_port": 3128, "load": 12.5, "geo_data": {"city": "Z\\u00fcrich"}}}',
    u'[1.0, 10, 1e2, -0.5, 0e0, 0E-0]', u'"/\\/"', u'[true,false,null]', u'{"k":[]}',
]

MALFORMED = [
    u'', u' ', u'{', u'}', u'[', u']', u'[1', u'[1,]', u'[,1]', u'[1 2]', u'{"a"}', u'{"a":}', u'{"a":1,}',
    u'{a:1}', u"{'a':1}", u'{"a" 1}', u'{"a":1 "b":2}', u'{,}', u'{1:2}', u'"abc', u'"abc\\"', u'"\\x41"',
    u'"\\u12"', u'"\\u12G4"', u'"\\u 123"', u'"\\U00000041"', u'"\\ud800\\uZZZZ"', u'"tab\there"',
    u'"new\nline"', u'"\x00"', u'"\x1f"', u"'single'", u'01', u'-01', u'00', u'1.', u'.5', u'-', u'--1',
    u'+1', u'1e', u'1e+', u'1E-', u'0x10', u'1_000', u'\u0661', u'tru', u'truex', u'True', u'nul',
    u'NULL', u'NaN', u'Infinity', u'-Infinity', u'nan', u'[1]x', u'{} {}', u'1 2', u'"a" "b"',
    u'\ufeff{}', u'\u00a0[]', u'[1]\x00', u'/* c */ 1', u'// c\n1', u'[1,,2]', u'{"a":1}}', u'[]]',
    u'"\\"', u'"\\', u'[' * (minijson.MAX_DEPTH + 1) + u']' * (minijson.MAX_DEPTH + 1),
]


def same(a, b):
    """Equal values and types all the way down (1 != 1.0 here; NaN never appears)."""
    if type(a) is not type(b) and not (isinstance(a, (str, type(u""))) and isinstance(b, (str, type(u"")))):
        if not (type(a).__name__ in ("int", "long") and type(b).__name__ in ("int", "long")):
            return False
    if isinstance(a, dict):
        return sorted(a) == sorted(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


class MiniJsonTest(unittest.TestCase):
    def test_valid_documents_equal_json_loads(self):
        for doc in VALID:
            expected = json.loads(doc)
            got = loads(doc)
            self.assertTrue(same(got, expected), "%r: %r != %r" % (doc, got, expected))

    def test_strings_are_text(self):
        value = loads(u'{"k": ["v"]}')
        self.assertIsInstance(list(value)[0], type(u""))
        self.assertIsInstance(value[u"k"][0], type(u""))

    def test_surrogate_pair_becomes_one_character(self):
        value = loads(u'"\\ud83d\\ude00"')
        self.assertEqual(value, u"\U0001f600")
        if sys.maxunicode > 0xFFFF:
            self.assertEqual(len(value), 1)

    def test_lone_surrogates_are_kept_like_json(self):
        self.assertEqual(loads(u'"\\ud800\\u0041"'), u"\ud800A")
        self.assertEqual(loads(u'"\\udc00"'), u"\udc00")

    def test_numbers_keep_int_and_float_apart(self):
        self.assertEqual(type(loads(u"10")).__name__ in ("int", "long"), True)
        self.assertIsInstance(loads(u"10.0"), float)
        self.assertIsInstance(loads(u"1e1"), float)
        self.assertEqual(loads(u"123456789012345678901234567890"), 123456789012345678901234567890)
        self.assertEqual(loads(u"1e400"), float("inf"))

    def test_bytes_are_decoded_as_utf8(self):
        self.assertEqual(loads(b'{"a": "\xc3\xa9"}'), {u"a": u"\u00e9"})
        self.assertRaises(JSONError, loads, b'"\xff"')

    def test_non_text_is_a_type_error(self):
        self.assertRaises(TypeError, loads, 12)

    def test_malformed_documents_all_raise(self):
        for doc in MALFORMED:
            try:
                value = loads(doc)
            except JSONError as err:
                self.assertIsInstance(err, ValueError)
                self.assertTrue(0 <= err.pos <= len(doc), doc)
                continue
            self.fail("no error for %r (got %r)" % (doc, value))

    def test_json_loads_rejects_the_same_corpus_except_documented_differences(self):
        documented = (u"NaN", u"Infinity", u"-Infinity")  # json.loads extensions minijson refuses
        for doc in MALFORMED:
            if doc in documented or len(doc) > 2 * minijson.MAX_DEPTH:
                continue
            self.assertRaises(ValueError, json.loads, doc)

    def test_error_says_where(self):
        err = self.assertRaises_(u'{\n  "a": tru\n}')
        self.assertEqual((err.lineno, err.colno), (2, 8))
        self.assertIn("line 2 column 8", str(err))

    def assertRaises_(self, doc):
        try:
            loads(doc)
        except JSONError as err:
            return err
        self.fail("no error for %r" % doc)

    def test_deep_but_allowed_nesting(self):
        depth = minijson.MAX_DEPTH
        self.assertEqual(loads(u"[" * depth + u"]" * depth), json.loads(u"[" * depth + u"]" * depth))


if __name__ == "__main__":
    unittest.main()
