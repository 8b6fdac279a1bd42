"""A DLPack producer with nothing but the DLPack methods: what nanobind hands over for CUDA memory when
neither torch nor CuPy is loaded (here around a NumPy array or tensor, so that it runs on the CPU)."""


class BareDLPack:
    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()
