"""Pure tensor functions (L0): Fourier transforms, geometry, CTF, projection, masks.

Device and dtype follow the input tensors; nothing here chooses a device except
:func:`vitrify.core.device.resolve_device`, which only job entry points call.
"""
