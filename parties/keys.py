"""CurveZMQ key pairs: generate, write, read.

A key file is two lines of text, ``public = <z85>`` and ``secret = <z85>``;
the public half alone goes into the study file.  Secret key files are created
with mode 0600.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import zmq

from mpc.errors import InputError


@dataclass(frozen=True)
class KeyPair:
    public: bytes
    secret: bytes

    @property
    def pair(self):
        return self.public, self.secret


def generate() -> KeyPair:
    public, secret = zmq.curve_keypair()
    return KeyPair(public, secret)


def write(path, keys: KeyPair) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"public = {keys.public.decode()}\nsecret = {keys.secret.decode()}\n")
    return path


def read(path) -> KeyPair:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read key file {path}: {exc.strerror}") from None
    fields = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise InputError(f"{path}, line {n}: expected 'public = ...' or 'secret = ...'")
        fields[name.strip()] = value.strip().encode()
    for name in ("public", "secret"):
        if name not in fields or len(fields[name]) != 40:
            raise InputError(f"{path}: missing or malformed {name} key (40 z85 characters expected)")
    return KeyPair(fields["public"], fields["secret"])
