# Shim: setuptools needs setup.py only to learn about the cffi extension.
from setuptools import setup

setup(cffi_modules=["native/build.py:ffibuilder"])
