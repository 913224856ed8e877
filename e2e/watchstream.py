"""Reads what `kubectl get --watch -o json` wrote: JSON objects one after another, not a list.

Used by the e2e scripts' embedded checks (PYTHONPATH=e2e): `from watchstream import stream`.
"""
import json


def stream(path):
    """Yields each JSON object of the file in order."""
    text, pos, dec = open(path, encoding="utf-8").read(), 0, json.JSONDecoder()
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return
        obj, pos = dec.raw_decode(text, pos)
        yield obj
