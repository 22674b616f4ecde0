"""The optional C accelerator (walstream._native). Everything else is declared in pyproject.toml.

`optional=True`: where no C compiler is found the build prints a warning and installs walstream without it,
and walstream runs on its pure-Python path (`walstream --version` says which one is active).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("walstream._native._rowenc", ["src/walstream/_native/_rowenc.c"],
                             depends=["src/walstream/_native/_tags.h"], optional=True)])
