"""`natsedge flash`: the image checks and the offsets per chip, and the "no board answered" error run for real
through esptool against a port that does not exist and against a PTY on which nothing answers.

No test here writes flash: that needs a chip (docs/firmware.md, "What cannot be tested here")."""

from __future__ import annotations

import pytest

from host.tools.firmware_cmd import ESP_APP_DESC_MAGIC, FirmwareError, check_image

from .vboard import SilentPort, run_cli


def image(path, chip_id: int, app: bool = False):
    # Just enough of an ESP image header (esp_image_header_t + extended header) for the checks and esptool's
    # command line: magic e9, 3 segments, chip id at bytes 12-13, optionally the app descriptor magic at 32.
    head = bytearray(64)
    head[0] = 0xE9
    head[1] = 3
    head[12:14] = chip_id.to_bytes(2, "little")
    if app:
        head[32:36] = ESP_APP_DESC_MAGIC.to_bytes(4, "little")
    path.write_bytes(bytes(head) + b"\xff" * 4096)
    return path


@pytest.mark.parametrize("chip, chip_id, offset", [("esp32", 0, 0x1000), ("esp32s3", 9, 0x0), ("esp32c3", 5, 0x0)])
def test_offset_follows_the_chip(tmp_path, chip, chip_id, offset):
    assert check_image(image(tmp_path / "fw.bin", chip_id), chip, None) == offset


def test_image_for_another_chip_is_refused_before_touching_the_port(tmp_path):
    with pytest.raises(FirmwareError, match="built for esp32s3, not esp32: pass --chip esp32s3"):
        check_image(image(tmp_path / "fw.bin", 9), "esp32", None)


def test_app_only_image_needs_an_explicit_offset(tmp_path):
    fw = image(tmp_path / "micropython.bin", 0, app=True)
    with pytest.raises(FirmwareError, match="application image only"):
        check_image(fw, "esp32", None)
    assert check_image(fw, "esp32", 0x10000) == 0x10000


def test_a_file_that_is_not_an_esp_image_is_refused(tmp_path):
    p = tmp_path / "fw.bin"
    p.write_bytes(b"\x7fELF" + bytes(100))
    r = run_cli("host.tools.cli", "flash", "--port", "/dev/null", "--firmware", str(p))
    assert r.returncode == 1
    assert "is not an ESP firmware image (first byte 7f, expected e9)" in r.stderr


def test_flash_to_a_port_that_does_not_exist_names_the_port(tmp_path):
    port = str(tmp_path / "ttyUSB-nope")
    r = run_cli("host.tools.cli", "flash", "--port", port, "--firmware", str(image(tmp_path / "fw.bin", 0)),
                "--connect-attempts", "1", timeout=60)
    assert r.returncode == 1
    assert f"natsedge flash: error: cannot open {port}, so no board can answer there" in r.stderr
    assert "erase-flash" in r.stdout  # esptool ran, and failed at its first step: nothing was written


def test_flash_to_a_pty_that_answers_nothing_names_the_port(tmp_path):
    silent = SilentPort(tmp_path / "silent.pty").start()
    try:
        r = run_cli("host.tools.cli", "flash", "--port", silent.port, "--chip", "esp32s3", "--firmware",
                    str(image(tmp_path / "fw.bin", 9)), "--connect-attempts", "1", "--no-erase", timeout=60)
    finally:
        silent.stop()
    assert r.returncode == 1
    assert f"no board answered on {silent.port}: " in r.stderr
    assert "No serial data received" in r.stderr
    assert "write-flash -z 0x0 " in r.stdout  # S3: the image goes at 0x0
