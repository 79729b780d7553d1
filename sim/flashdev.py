# sim/flashdev.py — emulated ESP32 flash partitions for MicroPython's vfs (littlefs), in the unix port.
#
# The semantics of esp32.Partition (research: shared/micropython/FACTS.md section 3.1, probes/flashdev.py):
#   readblocks(block, buf, offset=0)
#   writeblocks(block, buf)          erase the block(s), then program (the FAT path)
#   writeblocks(block, buf, offset)  program only (the littlefs path)
#   ioctl(op, arg): 1 init, 2 deinit, 3 sync, 4 block count, 5 block size, 6 erase one block
# Programming is NOR flash's: new = old AND data. Every program and erase is counted, so tests and the
# bench can measure bytes programmed and erases per record.
#   RamFlash   a bytearray (fast; strict mode counts 0->1 programs without an erase)
#   CutFlash   RAM flash that loses power at its N-th program/erase: that operation is half applied, every
#              later one raises PowerCut (deterministic power-cut sweeps)
# mount(dev, point) formats the device if it holds no littlefs yet and mounts it (sim/flashfile.py, beside the
# image-file partition an edge boots on).


from sim.flashfile import mount  # noqa: F401  (flashdev.mount for its callers)


class PowerCut(Exception):
    pass


class RamFlash:
    def __init__(self, block_size=4096, block_count=256, data=None):
        self.bs = block_size
        self.bc = block_count
        self.data = data if data is not None else bytearray(b"\xff" * (block_size * block_count))
        self.prog_bytes = 0
        self.prog_ops = 0
        self.erases = 0
        self.reads = 0
        self.syncs = 0
        self.strict = False
        self.violations = 0

    def _prog(self, addr, buf):
        d = self.data
        n = len(buf)
        if self.strict:
            for i in range(n):
                old = d[addr + i]
                b = buf[i]
                if (old & b) != b:
                    self.violations += 1
                d[addr + i] = old & b
        else:
            d[addr : addr + n] = buf
        self.prog_bytes += n
        self.prog_ops += 1

    def _erase(self, block):
        a = block * self.bs
        self.data[a : a + self.bs] = b"\xff" * self.bs
        self.erases += 1

    def readblocks(self, block, buf, offset=0):
        a = block * self.bs + offset
        buf[:] = self.data[a : a + len(buf)]
        self.reads += 1

    def writeblocks(self, block, buf, offset=None):
        if offset is None:
            for i in range((len(buf) + self.bs - 1) // self.bs):
                self._erase(block + i)
            offset = 0
        self._prog(block * self.bs + offset, buf)

    def ioctl(self, op, arg):
        if op == 3:
            self.syncs += 1
            return 0
        if op == 4:
            return self.bc
        if op == 5:
            return self.bs
        if op == 6:
            self._erase(arg)
            return 0
        return 0 if op in (1, 2) else None


class CutFlash(RamFlash):
    def __init__(self, data, block_size, block_count, cut_at):
        RamFlash.__init__(self, block_size, block_count, data)
        self.cut_at = cut_at
        self.ops = 0
        self.dead = False

    def _tick(self):
        if self.dead:
            raise PowerCut()
        self.ops += 1
        if self.ops == self.cut_at:
            self.dead = True
            return True
        return False

    def readblocks(self, block, buf, offset=0):
        if self.dead:
            raise PowerCut()
        RamFlash.readblocks(self, block, buf, offset)

    def _prog(self, addr, buf):
        if self._tick():
            RamFlash._prog(self, addr, buf[: len(buf) // 2])
            raise PowerCut()
        RamFlash._prog(self, addr, buf)

    def _erase(self, block):
        if self._tick():
            a = block * self.bs
            self.data[a : a + self.bs // 2] = b"\xff" * (self.bs // 2)
            raise PowerCut()
        RamFlash._erase(self, block)
