"""Reading tshark's JSON output in tests."""

import json
import subprocess


def tshark_json(tshark: str, path) -> list:
    """Every frame of a capture, decoded by tshark with all fields (-T json -V)."""
    out = subprocess.run([tshark, "-r", str(path), "-T", "json", "-V"], capture_output=True, text=True,
                         timeout=60, check=True)
    return json.loads(out.stdout)


def find(node, key) -> list:
    """All values of ``key`` anywhere in tshark's JSON tree."""
    found = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                found.append(v)
            found.extend(find(v, key))
    elif isinstance(node, list):
        for v in node:
            found.extend(find(v, key))
    return found
