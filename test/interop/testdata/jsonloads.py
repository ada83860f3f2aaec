"""Reads request bodies as servers of the official Python SDK do: the
body's bytes to pydantic_core.from_json (jiter; the SDK's Streamable HTTP
server since it dropped RootModel from JSONRPCMessage), and to json.loads
(earlier releases; it picks UTF-8, -16 or -32 by the first bytes and lets
UTF-8-encoded surrogates through), for the parser differential of
TestParseDifferential.

    python3 jsonloads.py < bodies.json

Input: a JSON array of base64 bodies. Output: a JSON array with, per body,
{"ok": bool, "tree": ..., "jiter": {"ok": bool, "tree": ...}}: json.loads'
reading and from_json's (absent without pydantic_core), the trees tagged
as test/node/jsonparse.mjs tags them, but for integers: ["i", digits]
(Python keeps them exact) and floats as repr gives them.
"""
import base64
import json
import sys

try:
    import pydantic_core
except ImportError:
    pydantic_core = None


def tag(v):
    if v is None:
        return ["z"]
    if v is True:
        return ["t"]
    if v is False:
        return ["f"]
    if isinstance(v, int):
        return ["i", str(v)]
    if isinstance(v, float):
        return ["n", repr(v)]
    if isinstance(v, str):
        try:
            v.encode("utf-8")
            return ["s", v, True]
        except UnicodeEncodeError:
            return ["s", v.encode("utf-8", "replace").decode("utf-8"), False]
    if isinstance(v, list):
        return ["a", [tag(e) for e in v]]
    return ["o", [[k if _well_formed(k) else k.encode("utf-8", "replace").decode("utf-8"), tag(e)] for k, e in v.items()]]


def _well_formed(s):
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def reading(parse, body):
    try:
        return {"ok": True, "tree": tag(parse(body))}
    except Exception:  # syntax, encoding, recursion depth, huge integers
        return {"ok": False}


def read(b64):
    body = base64.b64decode(b64)
    out = reading(json.loads, body)
    if pydantic_core is not None:
        out["jiter"] = reading(pydantic_core.from_json, body)
    return out


sys.setrecursionlimit(10000)
json.dump([read(b) for b in json.load(sys.stdin)], sys.stdout)
