# edge: the NATS stack that runs on MicroPython and CPython (see README.md).
