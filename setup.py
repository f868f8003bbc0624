"""Build hook: the device's reduce ALU and the per-datagram fast path are cffi extensions
(API mode) compiled at install.

Everything else is declared in pyproject.toml.
"""

from setuptools import setup

setup(cffi_modules=["firmware_model/alu_build.py:ffibuilder",
                    "netdam/wire/fastpath_build.py:ffibuilder"])
