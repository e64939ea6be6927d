"""A results bundle as bytes: writing it (the manifest, the credential scan, a 0600 tar.gz written
atomically) and reading one that may be hostile (in memory, never extracted, bounded)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, cast

from crossnet import report

__all__ = [
    "BUNDLE_SCHEMA",
    "MANIFEST",
    "OBSERVATIONS_SCHEMA",
    "SAFE_NAME",
    "BundleError",
    "Unusable",
    "credential_problems",
    "crossnet_version",
    "document",
    "load_matrix_or_bundle",
    "manifest_of",
    "manifest_problems",
    "member_name",
    "read_bundle",
    "sha256",
    "to_json",
    "write_bundle",
]

BUNDLE_SCHEMA, OBSERVATIONS_SCHEMA = "crossnet.bundle/v1", "crossnet.observations/v1"
MANIFEST = "manifest.sha256"
MAX_MEMBERS, MAX_MEMBER_BYTES, MAX_TOTAL_BYTES = 1000, 256 << 20, 512 << 20
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,120}(/[A-Za-z0-9][A-Za-z0-9._-]{0,120}){0,2}")
_MANIFEST_LINE = re.compile(r"([0-9a-f]{64}) [ *](.+)")
_CREDENTIALS = (  # (what, pattern, words one of which the pattern's match holds, lowercased)
    (
        "a PEM private key or certificate",
        rb"-----BEGIN [A-Z0-9 ]*(PRIVATE KEY|CERTIFICATE)-----",
        (b"-----begin ",),
    ),
    (
        "a kubeconfig credential",
        rb"(client-key-data|client-certificate-data|certificate-authority-data)\s*[:=]",
        (b"-data",),
    ),
    ("a bearer token", rb"\bBearer\s+[A-Za-z0-9._~+/=-]{16,}", (b"bearer",)),
    ("a JSON web token", rb"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.", (b"eyj",)),
    ("a token", rb"(?i)\b(token|secret)[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9._~+/-]{16,}", (b"token", b"secret")),
    ("a password", rb"(?i)\b(password|passwd)[\"']?\s*[:=]\s*[\"']?[^\s\"',}]", (b"passw",)),
)


class BundleError(Exception):
    """No bundle was written (the message says why and what to do)."""


class Unusable(Exception):
    """Not a crossnet results bundle at all (exit 2)."""


class _Oversized(Exception):
    pass


def crossnet_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("crossnet")
    except PackageNotFoundError:
        return "unknown"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def to_json(value: Any) -> bytes:
    return (json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


def member_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text).lstrip("._-")[:100] or "file"


# --------------------------------------------------------------------------- writing


def credential_problems(members: Mapping[str, bytes], forbidden: Sequence[str] = ()) -> list[str]:
    """Where a member holds text that looks like a credential (never the text itself)."""
    checks = [(what, re.compile(pattern), words) for what, pattern, words in _CREDENTIALS]
    for secret in (s.encode() for s in forbidden if len(s) >= 8):
        checks.append(("a secret of this run", re.compile(re.escape(secret)), (secret.lower(),)))
    found = []
    for name, data in sorted(members.items()):
        lowered = data.lower()  # a plain search for the words first: the patterns on 50 MB took seconds
        for what, pattern, words in checks:
            if any(word in lowered for word in words) and (match := pattern.search(data)):
                line = data.count(b"\n", 0, match.start()) + 1
                found.append(f"{name} holds what looks like {what} (line {line})")
    return found


def manifest_of(members: Mapping[str, bytes]) -> bytes:
    """`sha256sum` output for every member but the manifest itself."""
    return "".join(f"{sha256(data)}  {name}\n" for name, data in sorted(members.items()) if name != MANIFEST).encode()


def write_bundle(out_dir: Path, run_id: str, members: Mapping[str, bytes], forbidden: Sequence[str] = ()) -> Path:
    """Write `crossnet-results-<run-id>.tar.gz` (0600, atomically) with a manifest of `members`;
    raise BundleError when a member looks like it holds a credential (or one of `forbidden`)."""
    problems = credential_problems(members, forbidden)
    if problems:
        raise BundleError("; ".join(problems) + "; a results bundle never carries credentials: remove them there")
    files = {**members, MANIFEST: manifest_of(members)}
    path = out_dir / f"crossnet-results-{member_name(run_id)}.tar.gz"
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=out_dir)  # 0600
    try:
        with (
            os.fdopen(handle, "wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped,
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for name in sorted(files):
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(files[name]), 0o600, int(time.time())
                tar.addfile(info, io.BytesIO(files[name]))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


# --------------------------------------------------------------------------- reading (hostile input)


class _Bounded:
    """The decompressed stream, read no further than `limit` bytes (a gzip bomb or a forged
    pax/long-name header cannot make tarfile read more)."""

    def __init__(self, raw: gzip.GzipFile, limit: int) -> None:
        self.raw, self.limit = raw, limit

    def read(self, size: int = -1) -> bytes:
        left = self.limit - self.raw.tell()
        if size < 0 or size > left:
            data = self.raw.read(left + 1)
            if len(data) > left:
                raise _Oversized(f"it unpacks to more than {self.limit >> 20} MiB")
            return data
        return self.raw.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        if (offset if whence == 0 else self.raw.tell() + offset if whence == 1 else self.limit + 1) > self.limit:
            raise _Oversized(f"it unpacks to more than {self.limit >> 20} MiB")
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()


def read_bundle(
    path: Path, max_member: int = MAX_MEMBER_BYTES, max_total: int = MAX_TOTAL_BYTES, max_members: int = MAX_MEMBERS
) -> tuple[dict[str, bytes], list[str]]:
    """The regular files of a bundle by name, and why any member is refused (an unsafe path, a
    link or device, an oversized member, a duplicate); raise Unusable when it is no tar.gz at all."""
    try:
        with path.open("rb") as raw:
            if raw.read(2) != b"\x1f\x8b":
                raise Unusable(f"{path}: not a crossnet results bundle (not gzip-compressed; a bundle is a .tar.gz)")
            raw.seek(0)
            stream = _Bounded(gzip.GzipFile(fileobj=raw), max_total)
            files, refused = _members(stream, max_member, max_total, max_members)
    except OSError as exc:  # also gzip.BadGzipFile
        raise Unusable(f"{path}: not a readable .tar.gz ({exc.strerror or exc})") from None
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise Unusable(f"{path}: not a readable .tar.gz ({exc or exc.__class__.__name__})") from None
    return files, refused


def _members(stream: _Bounded, max_member: int, max_total: int, max_members: int) -> tuple[dict[str, bytes], list[str]]:
    files: dict[str, bytes] = {}
    refused: list[str] = []
    try:
        with tarfile.open(fileobj=cast(IO[bytes], stream), mode="r:") as tar:
            for count, member in enumerate(tar, start=1):
                shown = json.dumps(member.name[:120], ensure_ascii=True)
                if count > max_members:
                    refused.append(f"more than {max_members} members: refused")
                    break
                if not SAFE_NAME.fullmatch(member.name):
                    refused.append(f"{shown}: unsafe path (absolute, '..', or odd characters): refused")
                elif member.issym() or member.islnk():
                    refused.append(f"{shown}: a link to {json.dumps(member.linkname[:120])}: refused")
                elif member.isdir():
                    continue
                elif not member.isreg() or member.issparse():
                    refused.append(f"{shown}: a device, fifo, sparse or other special file: refused")
                elif member.size > max_member or sum(map(len, files.values())) + member.size > max_total:
                    refused.append(
                        f"{shown}: {member.size} bytes, more than a member (or the bundle) may hold: refused"
                    )
                    break
                elif member.name in files:
                    refused.append(f"{shown}: appears twice: refused")
                else:
                    handle = tar.extractfile(member)
                    files[member.name] = handle.read(member.size) if handle else b""
                    if len(files[member.name]) != member.size:
                        raise EOFError(f"{member.name} is truncated")
    except _Oversized as exc:
        refused.append(f"{exc}: refused")
    return files, refused


def manifest_problems(files: Mapping[str, bytes]) -> list[str]:
    """Every file listed with its hash, none missing, none extra."""
    problems, listed = [], {}
    for number, line in enumerate(files[MANIFEST].decode("utf-8", "replace").splitlines(), start=1):
        match = _MANIFEST_LINE.fullmatch(line)
        if match is None or match[2] in listed:
            problems.append(f"{MANIFEST} line {number}: not '<sha256>  <file>' or a repeated file")
            continue
        listed[match[2]] = match[1]
    for name, digest in sorted(listed.items()):
        if name not in files:
            problems.append(f"{name}: listed in {MANIFEST} but missing from the bundle")
        elif sha256(files[name]) != digest:
            problems.append(f"{name}: changed (its SHA-256 is not the one in {MANIFEST})")
    problems += [
        f"{name}: in the bundle but not in {MANIFEST}" for name in sorted(set(files) - set(listed) - {MANIFEST})
    ]
    return problems


def document(files: Mapping[str, bytes], name: str) -> Any:
    """A JSON member, parsed; ValueError naming it when it is missing or not JSON."""
    if name not in files:
        raise ValueError(f"{name}: missing from the bundle")
    try:
        return json.loads(files[name])
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{name}: not JSON ({str(exc)[:120]})") from None


def load_matrix_or_bundle(path: Path) -> dict[str, Any]:
    """matrix.json, or the matrix of a results bundle whose manifest holds (for `crossnet diff`)."""
    try:
        with path.open("rb") as raw:
            bundle = raw.read(2) == b"\x1f\x8b"
    except OSError:
        bundle = False
    if not bundle:
        return report.load_matrix(path)
    try:
        files, problems = read_bundle(path)
        problems += manifest_problems(files) if MANIFEST in files else [f"no {MANIFEST}"]
        matrix = document(files, "matrix.json")
    except (Unusable, ValueError) as exc:
        raise report.ReportError(f"{path}: {exc}") from None
    problems += [f"matrix.json: {p}" for p in report.validate_matrix(matrix)]
    if problems:
        raise report.ReportError(f"{path}: not a sound results bundle: {'; '.join(problems[:5])}")
    return cast(dict[str, Any], matrix)
