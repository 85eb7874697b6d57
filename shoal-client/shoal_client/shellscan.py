"""Find the assignments of one variable in a shell-sourced file, as /bin/sh would see them.

CVMFS feeds each config file to /bin/sh and then asks the shell for the value of every name
assigned in it (cvmfs/options.cc: BashOptionsManager), so the only safe edit is one that knows
what the shell knows: which lines start a command at the top level, which bytes are inside a
quoted string, a here-document or a compound command (if/case/loops/functions/braces/subshells),
and where a word ends. This is a small POSIX-sh lexer for that and nothing more: it never runs
anything, and whatever it cannot follow it reports, so the caller can refuse instead of guessing.
Pure functions on bytes; no I/O.
"""
import re

_NAME = re.compile(br"[A-Za-z_][A-Za-z0-9_]*")
_OPERATOR_CHARS = b";&|()<>"
_BLANK = b" \t"
_OPENERS = {b"if": b"if", b"case": b"case", b"while": b"loop", b"until": b"loop", b"for": b"loop",
            b"select": b"loop"}
_CLOSERS = {b"fi": b"if", b"esac": b"case", b"done": b"loop"}
_DECLARATIONS = (b"export", b"readonly", b"eval")
_RESERVED = tuple(_OPENERS) + tuple(_CLOSERS) + (b"{", b"}", b"then", b"else", b"elif", b"do", b"!", b"time", b"in",
                                                 b"function")


class ShellSyntaxError(ValueError):
    """The file is not something /bin/sh would read to its end (an unterminated quote, say)."""


class Assignment(object):
    """One ``NAME=word`` the shell would execute (or a bare ``readonly NAME``)."""

    def __init__(self, name, line, start, value_start, value_end, prefix, nested, first_on_line,
                 has_substitution, spans_lines, bare=False):
        self.name = name
        self.line = line                    # 1-based line of the word's first byte
        self.start = start                  # offset of the prefix (export/readonly/eval) or of NAME
        self.value_start = value_start      # offset just after "="
        self.value_end = value_end          # offset just after the word
        self.prefix = prefix                # b"", b"export", b"readonly" or b"eval"
        self.nested = nested                # inside if/case/loop/function/braces/subshell
        self.first_on_line = first_on_line  # the first command word of a line that starts a command
        self.has_substitution = has_substitution  # $(...), `...` or $((...)) in the value
        self.spans_lines = spans_lines      # the word goes on past a newline
        self.bare = bare                    # "readonly NAME" / "export NAME" without a value
        self.prefixes_command = False       # "NAME=value command": set only in command's environment

    def __repr__(self):
        return "Assignment(%r, line %d, %s)" % (self.name, self.line, "nested" if self.nested else "top")


class Scanner(object):
    """One pass over ``data``; ``assignments`` and ``problems`` hold what it found."""

    def __init__(self, data, watch=None):
        self.data = data
        self.watch = watch          # a name whose appearance in an eval argument is reported
        self.opaque = []            # lines where export/readonly/eval may set ``watch`` in a way we cannot edit
        self.pos = 0
        self.line = 1
        self.stack = []            # open compound commands: b"if", b"case", b"loop", b"{", b"("
        self.case_pattern = False  # after "case WORD in" / ";;": the next word is a pattern
        self.pending_heredocs = []  # (delimiter, strip_tabs)
        self.assignments = []
        self.line_has_command = False
        self.line_starts_top = True  # this physical line starts at the top level (no continuation)
        self.simple = []             # assignments so far in the current simple command

    # --- low level -------------------------------------------------------------------------------
    def peek(self, n=1):
        return self.data[self.pos:self.pos + n]

    def _newline(self):
        self.simple = []
        self.pos += 1
        self.line += 1
        self.line_has_command = False
        self.line_starts_top = not self.stack
        if self.pending_heredocs:
            self._heredoc_bodies()

    def _heredoc_bodies(self):
        docs, self.pending_heredocs = self.pending_heredocs, []
        for delimiter, strip_tabs in docs:
            while True:
                if self.pos >= len(self.data):
                    raise ShellSyntaxError("line %d: here-document delimited by %r never ends"
                                           % (self.line, delimiter.decode("latin-1")))
                end = self.data.find(b"\n", self.pos)
                end = len(self.data) if end < 0 else end
                text = self.data[self.pos:end]
                self.pos = min(end + 1, len(self.data))
                self.line += 1
                if (text.lstrip(b"\t") if strip_tabs else text) == delimiter:
                    break
        self.line_starts_top = not self.stack

    # --- words -----------------------------------------------------------------------------------
    def read_word(self):
        """Read one word from here; return (word bytes, has_substitution, spans_lines)."""
        start, first_line, subst = self.pos, self.line, False
        data = self.data
        while self.pos < len(data):
            c = data[self.pos:self.pos + 1]
            if c in _BLANK or c == b"\n" or c in _OPERATOR_CHARS:
                break
            if c == b"\\":
                if data[self.pos + 1:self.pos + 2] == b"\n":
                    self.line += 1
                self.pos += 2
            elif c == b"'":
                self._single_quoted()
            elif c == b'"':
                subst = self._double_quoted() or subst
            elif c == b"`":
                self._backquoted()
                subst = True
            elif c == b"$":
                subst = self._dollar() or subst
            else:
                self.pos += 1
        return data[start:self.pos], subst, self.line != first_line

    def _count_lines(self, start):
        self.line += self.data.count(b"\n", start, self.pos)

    def _single_quoted(self):
        start = self.pos
        end = self.data.find(b"'", self.pos + 1)
        if end < 0:
            raise ShellSyntaxError("line %d: unterminated ' quote" % self.line)
        self.pos = end + 1
        self._count_lines(start)

    def _double_quoted(self):
        subst, opened = False, self.line
        self.pos += 1
        while self.pos < len(self.data):
            c = self.data[self.pos:self.pos + 1]
            if c == b'"':
                self.pos += 1
                return subst
            if c == b"\\":
                if self.data[self.pos + 1:self.pos + 2] == b"\n":
                    self.line += 1
                self.pos += 2
            elif c == b"`":
                self._backquoted()
                subst = True
            elif c == b"$":
                subst = self._dollar() or subst
            else:
                if c == b"\n":
                    self.line += 1
                self.pos += 1
        raise ShellSyntaxError('line %d: unterminated " quote' % opened)

    def _backquoted(self):
        opened = self.line
        self.pos += 1
        while self.pos < len(self.data):
            c = self.data[self.pos:self.pos + 1]
            if c == b"`":
                self.pos += 1
                return
            if c == b"\\":
                self.pos += 1
            if self.data[self.pos:self.pos + 1] == b"\n":
                self.line += 1
            self.pos += 1
        raise ShellSyntaxError("line %d: unterminated ` quote" % opened)

    def _dollar(self):
        """At ``$``: skip an expansion; return True for command or arithmetic substitution."""
        nxt = self.data[self.pos + 1:self.pos + 2]
        if nxt == b"(":
            self.pos += 2
            self._until_close(b")")
            return True
        if nxt == b"{":
            self.pos += 2
            return self._until_close(b"}")
        self.pos += 1
        return False

    def _until_close(self, closer):
        """Skip to the matching ``closer`` (quotes and nesting followed); return True if it held a substitution."""
        opened, depth, subst = self.line, 1, closer == b")"
        opener = b"(" if closer == b")" else b"{"
        while self.pos < len(self.data):
            c = self.data[self.pos:self.pos + 1]
            if c == closer:
                depth -= 1
                self.pos += 1
                if depth == 0:
                    return subst
            elif c == opener:
                depth += 1
                self.pos += 1
            elif c == b"\\":
                if self.data[self.pos + 1:self.pos + 2] == b"\n":
                    self.line += 1
                self.pos += 2
            elif c == b"'":
                self._single_quoted()
            elif c == b'"':
                subst = self._double_quoted() or subst
            elif c == b"`":
                self._backquoted()
                subst = True
            elif c == b"$":
                subst = self._dollar() or subst
            else:
                if c == b"\n":
                    self.line += 1
                self.pos += 1
        raise ShellSyntaxError("line %d: unterminated $%s...%s" % (opened, opener.decode(), closer.decode()))

    # --- commands --------------------------------------------------------------------------------
    def scan(self):
        data = self.data
        command_start = True
        declaration = None  # the export/readonly/eval word whose arguments we are reading
        while self.pos < len(data):
            c = data[self.pos:self.pos + 1]
            if c in _BLANK:
                self.pos += 1
            elif c == b"\n":
                self._newline()
                command_start, declaration, self.simple = True, None, []
            elif c == b"\\" and data[self.pos + 1:self.pos + 2] == b"\n":
                self.pos += 2  # a continued line is not a line start
                self.line += 1
            elif c == b"#":
                end = data.find(b"\n", self.pos)
                self.pos = len(data) if end < 0 else end
            elif c in b";&|":
                if data[self.pos:self.pos + 2] == b";;" and self.stack and self.stack[-1] == b"case":
                    self.case_pattern = True
                self.pos += 2 if data[self.pos + 1:self.pos + 2] in (c, b"&") else 1
                command_start, declaration, self.simple = True, None, []
                self.line_has_command = True
            elif c == b"(":
                self.pos += 1
                if self.case_pattern:
                    continue  # "(pattern)" of a case item
                if data[self.pos:self.pos + 1] == b"(":
                    self.pos += 1
                    self._until_close(b")")  # (( arithmetic ))
                    self.pos = min(self.pos + 1, len(data)) if data[self.pos:self.pos + 1] == b")" else self.pos
                elif command_start:
                    self.stack.append(b"(")
                # else: "name()" of a function definition; its body is the { ... } that follows
                command_start, declaration, self.simple = True, None, []
            elif c == b")":
                self.pos += 1
                if self.stack and self.stack[-1] == b"(":
                    self.stack.pop()
                elif self.stack and self.stack[-1] == b"case":
                    self.case_pattern = False  # end of a case pattern
                command_start, declaration, self.simple = True, None, []
            elif c in b"<>":
                self._redirection()
            else:
                line, start, first = self.line, self.pos, command_start and not self.line_has_command
                top_line = self.line_starts_top
                word, subst, spans = self.read_word()
                if self.case_pattern:
                    if word == b"esac" and self.stack and self.stack[-1] == b"case":
                        self.stack.pop()
                        self.case_pattern = False
                    continue
                if command_start and not declaration:
                    count = len(self.assignments)
                    command_start = self._command_word(word, line, start, first and top_line, subst, spans)
                    if len(self.assignments) > count:
                        self.simple.append(self.assignments[-1])
                    elif word not in _RESERVED:
                        for assignment in self.simple:  # NAME=value cmd: the value is only cmd's
                            assignment.prefixes_command = True
                        self.simple = []
                    if word in _DECLARATIONS:
                        declaration = (word, start, first and top_line)
                    self.line_has_command = True
                elif declaration:
                    self._declared(word, line, start, declaration, subst, spans)
                    declaration = (declaration[0], declaration[1], False)  # only the first argument leads
        if self.pending_heredocs:
            self._heredoc_bodies()
        if self.stack:
            raise ShellSyntaxError("the file ends inside an unterminated %s" % self.stack[-1].decode())
        return self

    def _redirection(self):
        data = self.data
        if data[self.pos:self.pos + 2] == b"<<" and data[self.pos + 2:self.pos + 3] != b"<":
            self.pos += 2
            strip = data[self.pos:self.pos + 1] == b"-"
            if strip:
                self.pos += 1
            while data[self.pos:self.pos + 1] in (b" ", b"\t"):
                self.pos += 1
            word, _, _ = self.read_word()
            delimiter = word.replace(b"'", b"").replace(b'"', b"").replace(b"\\", b"")
            self.pending_heredocs.append((delimiter, strip))
            return
        while data[self.pos:self.pos + 1] in b"<>&|":
            if not data[self.pos:self.pos + 1]:
                break
            self.pos += 1

    def _command_word(self, word, line, start, first, subst, spans):
        """Handle a word in command position; return whether the next word is in command position too."""
        if word in _OPENERS:
            self.stack.append(_OPENERS[word])
            if word == b"case":
                self._case_header()
                return False
            return word in (b"if", b"while", b"until")
        if word in _CLOSERS:
            if self.stack and self.stack[-1] == _CLOSERS[word]:
                self.stack.pop()
            return False
        if word == b"{":
            self.stack.append(b"{")
            return True
        if word == b"}":
            if self.stack and self.stack[-1] == b"{":
                self.stack.pop()
            return False
        if word in (b"then", b"else", b"elif", b"do", b"!", b"time"):
            return True
        if word == b"function":  # bash's "function name { ... }": the name, then a command position
            while self.data[self.pos:self.pos + 1] in (b" ", b"\t"):
                self.pos += 1
            self.read_word()
            return True
        if word == b"in" and self.stack and self.stack[-1] == b"case":
            self.case_pattern = True
            return False
        match = _NAME.match(word)
        if match and word[match.end():match.end() + 1] == b"=":
            name = match.group(0)
            self.assignments.append(Assignment(name, line, start, start + match.end() + 1, start + len(word), b"",
                                               bool(self.stack), first, subst, spans))
            return True  # NAME=value may prefix another assignment or a command
        return False

    def _case_header(self):
        # "case WORD in": read the subject and "in"; patterns follow
        data = self.data
        for _ in range(2):
            while data[self.pos:self.pos + 1] in (b" ", b"\t"):
                self.pos += 1
            if data[self.pos:self.pos + 1] in (b"\n", b""):
                return
            word, _, _ = self.read_word()
            if word == b"in":
                self.case_pattern = True
                return

    def _declared(self, word, line, start, declaration, subst, spans):
        """An argument of export/readonly/eval: ``NAME=value`` or a bare ``NAME``."""
        prefix, prefix_start, first = declaration
        match = _NAME.match(word)
        if self.watch and self.watch in word and not (
                match and match.group(0) == self.watch and word[match.end():match.end() + 1] == b"="):
            self.opaque.append(line)
        if not match:
            return
        name = match.group(0)
        if word[match.end():match.end() + 1] == b"=":
            self.assignments.append(Assignment(name, line, prefix_start, start + match.end() + 1, start + len(word),
                                               prefix, bool(self.stack), first, subst, spans))
        elif match.end() == len(word) and prefix != b"eval":
            if not (match.group(0) == self.watch and prefix == b"export"):  # "export NAME" changes no value
                self.assignments.append(Assignment(name, line, prefix_start, None, None, prefix, bool(self.stack),
                                                   first, False, False, bare=True))


def assignments(data, name):
    """(assignments of ``name`` in ``data``, lines where eval sets it opaquely); raise ShellSyntaxError."""
    scanner = Scanner(data, watch=name).scan()
    return [a for a in scanner.assignments if a.name == name], scanner.opaque
