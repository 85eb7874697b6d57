"""A small recursive-descent JSON parser for interpreters that lack the ``json`` module.

It accepts exactly RFC 8259 JSON and returns what ``json.loads`` returns for it (unicode strings,
int for integers, float for numbers with a fraction or exponent, dict/list/True/False/None).
Invalid input raises ``JSONError`` (a ``ValueError``) and never yields a partial result.
Deliberate differences from ``json.loads``: the non-standard ``NaN``/``Infinity``/``-Infinity``
are rejected, and nesting deeper than ``MAX_DEPTH`` raises ``JSONError`` instead of RecursionError.
"""
import sys

from ._compat import binary_type, text_type, unichr_

MAX_DEPTH = 256

_WHITESPACE = u" \t\n\r"
_DIGITS = u"0123456789"
_HEX = u"0123456789abcdefABCDEF"
_ESCAPES = {u'"': u'"', u"\\": u"\\", u"/": u"/", u"b": u"\b", u"f": u"\f", u"n": u"\n", u"r": u"\r",
            u"t": u"\t"}
_WIDE = sys.maxunicode > 0xFFFF


class JSONError(ValueError):
    """Invalid JSON; ``pos``, ``lineno`` and ``colno`` say where, like json.JSONDecodeError."""

    def __init__(self, msg, doc, pos):
        lineno = doc.count(u"\n", 0, pos) + 1
        colno = pos - doc.rfind(u"\n", 0, pos)
        ValueError.__init__(self, "%s: line %d column %d (char %d)" % (msg, lineno, colno, pos))
        self.msg = msg
        self.pos = pos
        self.lineno = lineno
        self.colno = colno


def loads(document):
    """Parse one JSON document (text, or UTF-8 bytes) and return the Python value."""
    if isinstance(document, binary_type):
        try:
            document = document.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise JSONError("Document is not UTF-8 (%s)" % err.reason, u"", 0)
    if not isinstance(document, text_type):
        raise TypeError("the JSON document must be text or bytes, not %s" % type(document).__name__)
    return _Parser(document).document()


def _join_surrogates(high, low):
    if _WIDE:
        return unichr_(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
    return unichr_(high) + unichr_(low)  # narrow build: the pair is how the character is stored


class _Parser(object):
    """State of one parse: the text, the cursor and the nesting depth."""

    __slots__ = ("text", "pos", "end", "depth")

    def __init__(self, text):
        self.text = text
        self.pos = 0
        self.end = len(text)
        self.depth = 0

    def error(self, msg, pos=None):
        return JSONError(msg, self.text, self.pos if pos is None else pos)

    def skip_ws(self):
        text, pos, end = self.text, self.pos, self.end
        while pos < end and text[pos] in _WHITESPACE:
            pos += 1
        self.pos = pos

    def peek(self):
        return self.text[self.pos] if self.pos < self.end else u""

    def document(self):
        self.skip_ws()
        value = self.value()
        self.skip_ws()
        if self.pos != self.end:
            raise self.error("Extra data")
        return value

    def value(self):
        char = self.peek()
        if char == u"{":
            return self.object()
        if char == u"[":
            return self.array()
        if char == u'"':
            self.pos += 1
            return self.string()
        if char == u"-" or (char and char in _DIGITS):
            return self.number()
        for word, result in ((u"true", True), (u"false", False), (u"null", None)):
            if self.text.startswith(word, self.pos):
                self.pos += len(word)
                return result
        raise self.error("Expecting value")

    def enter(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error("Nesting deeper than %d levels" % MAX_DEPTH)
        self.pos += 1
        self.skip_ws()

    def object(self):
        self.enter()
        result = {}
        if self.peek() == u"}":
            self.pos += 1
            self.depth -= 1
            return result
        while True:
            if self.peek() != u'"':
                raise self.error("Expecting property name enclosed in double quotes")
            self.pos += 1
            key = self.string()
            self.skip_ws()
            if self.peek() != u":":
                raise self.error("Expecting ':' delimiter")
            self.pos += 1
            self.skip_ws()
            result[key] = self.value()
            self.skip_ws()
            char = self.peek()
            self.pos += 1
            if char == u"}":
                break
            if char != u",":
                raise self.error("Expecting ',' delimiter", self.pos - 1)
            self.skip_ws()
        self.depth -= 1
        return result

    def array(self):
        self.enter()
        result = []
        if self.peek() == u"]":
            self.pos += 1
            self.depth -= 1
            return result
        while True:
            result.append(self.value())
            self.skip_ws()
            char = self.peek()
            self.pos += 1
            if char == u"]":
                break
            if char != u",":
                raise self.error("Expecting ',' delimiter", self.pos - 1)
            self.skip_ws()
        self.depth -= 1
        return result

    def hex4(self, pos):
        digits = self.text[pos:pos + 4]
        if len(digits) != 4 or any(d not in _HEX for d in digits):
            raise self.error("Invalid \\uXXXX escape", pos - 1)
        return int(digits, 16)

    def string(self):
        """Parse the rest of a string whose opening quote is just before ``pos``."""
        text, end = self.text, self.end
        begin = self.pos - 1
        pos = start = self.pos
        chunks = []
        while True:
            if pos >= end:
                raise self.error("Unterminated string starting at", begin)
            char = text[pos]
            if char == u'"':
                chunks.append(text[start:pos])
                break
            if char == u"\\":
                chunks.append(text[start:pos])
                pos += 1
                if pos >= end:
                    raise self.error("Unterminated string starting at", begin)
                esc = text[pos]
                if esc == u"u":
                    code = self.hex4(pos + 1)
                    pos += 5
                    if 0xD800 <= code <= 0xDBFF and text.startswith(u"\\u", pos):
                        low = self.hex4(pos + 2)
                        if 0xDC00 <= low <= 0xDFFF:
                            chunks.append(_join_surrogates(code, low))
                            pos += 6
                            start = pos
                            continue
                    chunks.append(unichr_(code))
                elif esc in _ESCAPES:
                    chunks.append(_ESCAPES[esc])
                    pos += 1
                else:
                    raise self.error("Invalid \\escape", pos - 1)
                start = pos
                continue
            if char < u" ":
                raise self.error("Invalid control character at", pos)
            pos += 1
        self.pos = pos + 1
        return u"".join(chunks)

    def number(self):
        text, end = self.text, self.end
        start = pos = self.pos
        if text[pos] == u"-":
            pos += 1
        if pos < end and text[pos] == u"0":
            pos += 1
        elif pos < end and u"1" <= text[pos] <= u"9":
            pos += 1
            while pos < end and text[pos] in _DIGITS:
                pos += 1
        else:
            raise self.error("Expecting value", start)
        is_float = False
        if pos + 1 < end and text[pos] == u"." and text[pos + 1] in _DIGITS:
            is_float = True
            pos += 2
            while pos < end and text[pos] in _DIGITS:
                pos += 1
        if pos < end and text[pos] in u"eE":
            exp = pos + 1
            if exp < end and text[exp] in u"+-":
                exp += 1
            if exp < end and text[exp] in _DIGITS:
                is_float = True
                pos = exp + 1
                while pos < end and text[pos] in _DIGITS:
                    pos += 1
        self.pos = pos
        literal = text[start:pos]
        try:
            return float(literal) if is_float else int(literal)
        except ValueError as err:  # e.g. Python 3.11+'s limit on digits in an int
            raise self.error("Number out of range (%s)" % err, start)
