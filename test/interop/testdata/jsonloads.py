"""Reads request bodies as a server of the official Python SDK does (the
body's bytes to json.loads, which picks UTF-8, -16 or -32 by the first
bytes and lets UTF-8-encoded surrogates through), for the parser
differential of TestParseDifferential.

    python3 jsonloads.py < bodies.json

Input: a JSON array of base64 bodies. Output: a JSON array with, per body,
{"ok": bool, "tree": ...}, the tree tagged as test/node/jsonparse.mjs tags
it, but for integers: ["i", digits] (Python keeps them exact) and floats as
repr gives them.
"""
import base64
import json
import sys


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


def read(b64):
    try:
        v = json.loads(base64.b64decode(b64))
    except Exception:  # syntax, encoding, recursion depth, huge integers
        return {"ok": False}
    return {"ok": True, "tree": tag(v)}


sys.setrecursionlimit(10000)
json.dump([read(b) for b in json.load(sys.stdin)], sys.stdout)
