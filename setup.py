"""The optional C accelerator (walstream._native). Everything else is declared in pyproject.toml.

`optional=True`: where no C compiler is found the build prints a warning and installs walstream without it,
and walstream runs on its pure-Python path (`walstream --version` says which one is active).
"""

from setuptools import Extension, setup

NATIVE = "src/walstream/_native"

setup(ext_modules=[Extension("walstream._native._rowenc", [f"{NATIVE}/_rowenc.c", f"{NATIVE}/_snapchunk.c",
                                                        f"{NATIVE}/_insertrun.c"],
                             depends=[f"{NATIVE}/_rowenc.h", f"{NATIVE}/_tags.h"], optional=True)])
