"""The ``netdam dissect --filter`` expression language: a small, safe parser (no eval).

Owns the grammar and its compilation into a predicate over ``frames.Frame``::

    expr   := and ( '||' and )*
    and    := unary ( '&&' unary )*
    unary  := '!' unary | '(' expr ')' | field OP value
    OP     := == | != | < | <= | > | >=

``field`` is a header field (opcode, status, dtype, redop, src, dst, seq, ack, req_id,
addr, addr2, imm, length, frag_off, payload_len, group, pkey, rkey, hop), or ``device``
(src or dst; ``device != 3`` means neither is 3), ``flag`` (``flag == RETRANSMIT``: the
bit is set), ``port`` (either UDP port), ``frame`` (record number), ``error`` (1 when the
datagram failed to decode) or ``note`` (1 when the capture annotated it). Values are
integers (decimal or 0x hex) or, for enum fields, names (``opcode==READ``, case does not
matter). ``and``, ``or`` and ``not`` are accepted for ``&&``, ``||`` and ``!``. A packet
whose header could not be read matches no comparison of a header field.
Anything else is a ``FilterError`` naming the column.
"""

from __future__ import annotations

import operator
import re
from typing import Callable

from netdam.errors import UsageError
from netdam.wire.fields import DType, Flag, Opcode, RedOp, Status

Predicate = Callable[[object], bool]

OPS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
       ">": operator.gt, ">=": operator.ge}
ENUMS = {"opcode": Opcode, "status": Status, "dtype": DType, "redop": RedOp}
HEADER = ("opcode", "status", "dtype", "redop", "src", "dst", "seq", "ack", "req_id",
          "addr", "addr2", "imm", "length", "frag_off", "payload_len", "group", "pkey",
          "rkey", "hop", "flags")
ALIASES = {"req": "req_id", "len": "length", "op": "opcode", "frag": "frag_off"}
SPECIAL = ("device", "flag", "port", "frame", "error", "note")
FIELDS = HEADER + SPECIAL

_TOKEN = re.compile(r"\s*(?:(?P<num>0[xX][0-9a-fA-F]+|\d+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
                    r"|(?P<op>==|!=|<=|>=|&&|\|\||[<>!()]))")


class FilterError(UsageError):
    """A --filter expression that does not parse."""


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            col = pos + len(text[pos:]) - len(text[pos:].lstrip()) + 1
            raise FilterError(f"bad filter {text!r}: at column {col}: unexpected "
                              f"{text[col - 1]!r}")
        kind = m.lastgroup
        value = m.group(kind)
        start = m.start(kind) + 1
        if kind == "name" and value.lower() in ("and", "or", "not"):
            kind, value = "op", {"and": "&&", "or": "||", "not": "!"}[value.lower()]
        out.append((kind, value, start))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def fail(self, what: str, tok=None) -> FilterError:
        tok = tok if tok is not None else self.peek()
        if tok is None:
            return FilterError(f"bad filter {self.text!r}: {what}, found the end")
        return FilterError(f"bad filter {self.text!r}: at column {tok[2]}: {what}, "
                           f"found {tok[1]!r}")

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self):
        tok = self.peek()
        self.i += 1
        return tok

    def accept(self, op: str) -> bool:
        tok = self.peek()
        if tok and tok[0] == "op" and tok[1] == op:
            self.i += 1
            return True
        return False

    def parse(self) -> Predicate:
        if not self.toks:
            raise FilterError("bad filter: it is empty")
        pred = self.expr()
        if self.peek() is not None:
            raise self.fail("expected '&&', '||' or the end")
        return pred

    def expr(self) -> Predicate:
        terms = [self.conj()]
        while self.accept("||"):
            terms.append(self.conj())
        return terms[0] if len(terms) == 1 else (lambda f: any(t(f) for t in terms))

    def conj(self) -> Predicate:
        terms = [self.unary()]
        while self.accept("&&"):
            terms.append(self.unary())
        return terms[0] if len(terms) == 1 else (lambda f: all(t(f) for t in terms))

    def unary(self) -> Predicate:
        if self.accept("!"):
            inner = self.unary()
            return lambda f: not inner(f)
        if self.accept("("):
            inner = self.expr()
            if not self.accept(")"):
                raise self.fail("expected ')'")
            return inner
        return self.comparison()

    def comparison(self) -> Predicate:
        tok = self.take()
        if tok is None or tok[0] != "name":
            raise self.fail("expected a field name (" + ", ".join(FIELDS) + ")", tok)
        name = ALIASES.get(tok[1].lower(), tok[1].lower())
        if name not in FIELDS:
            raise self.fail(f"unknown field; known: {', '.join(FIELDS)}", tok)
        op_tok = self.take()
        if op_tok is None or op_tok[0] != "op" or op_tok[1] not in OPS:
            raise self.fail("expected a comparison (==, !=, <, <=, >, >=)", op_tok)
        value = self.value(name, self.take())
        return _compare(name, op_tok[1], value)

    def value(self, name: str, tok) -> int:
        if tok is None or tok[0] not in ("num", "name"):
            raise self.fail(f"expected a value for {name}", tok)
        if tok[0] == "num":
            return int(tok[1], 0)
        enum = Flag if name == "flag" else ENUMS.get(name)
        if enum is None:
            raise self.fail(f"{name} takes a number", tok)
        try:
            member = enum[tok[1].upper()]
        except KeyError:
            names = ", ".join(m.name for m in enum)
            raise self.fail(f"not a {name} name (one of {names})", tok) from None
        return int(member).bit_length() - 1 if name == "flag" else int(member)


def _compare(name: str, op: str, value: int) -> Predicate:
    fn = OPS[op]
    if name in HEADER:
        def pred(f):
            v = f.fields.get(name)
            return v is not None and fn(v, value)
    elif name == "device":
        if op == "!=":
            def pred(f):
                s, d = f.fields.get("src"), f.fields.get("dst")
                return s is not None and s != value and d != value
        else:
            def pred(f):
                return any(v is not None and fn(v, value)
                           for v in (f.fields.get("src"), f.fields.get("dst")))
    elif name == "flag":
        if op not in ("==", "!="):
            raise FilterError(f"bad filter: flag takes == or != (is the bit set), not {op}")
        if not 0 <= value < 16:
            raise FilterError(f"bad filter: flag bit {value} is not in 0..15")
        bit = 1 << value   # a flag name stands for its bit position

        def pred(f):
            flags = f.fields.get("flags")
            return flags is not None and (bool(flags & bit) == (op == "=="))
    elif name == "port":
        if op == "!=":
            def pred(f):
                return f.src[1] != value and f.dst[1] != value
        else:
            def pred(f):
                return fn(f.src[1], value) or fn(f.dst[1], value)
    elif name == "frame":
        def pred(f):
            return fn(f.number, value)
    elif name == "error":
        def pred(f):
            return fn(int(f.error is not None), value)
    else:  # note
        def pred(f):
            return fn(int(bool(f.note)), value)
    return pred


def compile_filter(text: str | None) -> Predicate:
    """The predicate of a --filter expression (None or "" matches everything)."""
    if text is None or not text.strip():
        return lambda f: True
    return _Parser(text).parse()


__all__ = ["FilterError", "compile_filter", "FIELDS"]
