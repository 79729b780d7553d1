# sim/flashfile.py — an ESP32 flash partition emulated in an image file, for an edge booted on the unix port
# (tests/mp/flashboot.py), and mount(), which formats a partition that holds no littlefs yet and mounts it.
#
# It stands for esp32.Partition, which is C code and takes no Python heap, in the frozen 32-bit build whose heap
# the edge's figures are measured in (tests/edge/test_edge_frozen.py): so it is a single small class with no
# counters, and it erases from a 64-byte buffer (an ESP32 erases in C; littlefs may erase from a finaliser, when
# the heap is locked). Semantics as sim/flashdev.py's: writeblocks without an offset erases, then programs; with
# one, it programs only. littlefs never programs a byte twice between erases, so a plain write is NOR's AND here.
# Every operation reaches the image at once, so a SIGKILL of the process leaves the image as a power cut between
# two flash operations would (a block can be left half erased, as on a real chip).

_FF = b"\xff" * 64


class FileFlash:
    def __init__(self, path, block_size, block_count):
        self.bs = block_size
        self.bc = block_count
        try:
            self.f = open(path, "r+b")
        except OSError:
            self.f = open(path, "w+b")
            for _ in range(block_count * block_size // len(_FF)):
                self.f.write(_FF)
            self.f.flush()

    def readblocks(self, block, buf, offset=0):
        self.f.seek(block * self.bs + offset)
        self.f.readinto(buf)

    def writeblocks(self, block, buf, offset=None):
        if offset is None:
            for i in range((len(buf) + self.bs - 1) // self.bs):
                self.ioctl(6, block + i)
            offset = 0
        self.f.seek(block * self.bs + offset)
        self.f.write(buf)

    def ioctl(self, op, arg):
        # 1 init, 2 deinit, 3 sync, 4 block count, 5 block size, 6 erase one block
        if op == 3:
            self.f.flush()
        elif op == 4:
            return self.bc
        elif op == 5:
            return self.bs
        elif op == 6:
            self.f.seek(arg * self.bs)
            for _ in range(self.bs // len(_FF)):
                self.f.write(_FF)
        elif op not in (1, 2):
            return None
        return 0


def mount(dev, point):
    import vfs

    try:
        fs = vfs.VfsLfs2(dev)
    except OSError:
        vfs.VfsLfs2.mkfs(dev)
        fs = vfs.VfsLfs2(dev)
    vfs.mount(fs, point)
    return fs
