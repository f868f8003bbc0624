"""Build hook: the device's reduce ALU is a cffi extension (API mode) compiled at install.

Everything else is declared in pyproject.toml.
"""

from setuptools import setup

setup(cffi_modules=["firmware_model/alu_build.py:ffibuilder"])
