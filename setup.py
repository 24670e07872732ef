"""Builds jrnn's optional CPU recurrence kernel (jrnn/csrc/recurrence.cc -> jrnn/_recurrence*.so).

Everything else about the package is in pyproject.toml. The extension needs a C++17 compiler, the XLA FFI
headers of jaxlib and the OpenBLAS of the scipy-openblas32 wheel (build requirements in pyproject.toml). It is
optional: where any of them is missing, or the compiler fails, jrnn installs without it and runs on the XLA scan
(jrnn.cpu_kernel_available() is then False). See jrnn/_cpu_kernel.py.
"""

import importlib.util
import os

from setuptools import Extension
from setuptools import setup
from setuptools.command.build_ext import build_ext


def _package_dir(name):
  spec = importlib.util.find_spec(name)
  return None if spec is None or not spec.submodule_search_locations else list(spec.submodule_search_locations)[0]


def _extensions():
  jaxlib, openblas = _package_dir("jaxlib"), _package_dir("scipy_openblas32")
  if jaxlib is None or openblas is None:
    print(f"jrnn: not building the CPU kernel (found jaxlib: {jaxlib}, scipy-openblas32: {openblas})")
    return []
  return [
    Extension(
      "jrnn._recurrence",
      sources=["jrnn/csrc/recurrence.cc"],
      include_dirs=[os.path.join(jaxlib, "include"), os.path.join(openblas, "include")],
      library_dirs=[os.path.join(openblas, "lib")],
      libraries=["scipy_openblas"],
      language="c++",
      extra_compile_args=["-std=c++17", "-O3", "-fno-trapping-math", "-Wno-attributes", "-Wno-return-type"],
      optional=True,  # a failed compile is a warning: jrnn then runs on the XLA scan
    )
  ]


class _BuildExt(build_ext):
  """build_ext that also survives a missing compiler (``optional`` covers a failed compile only)."""

  def run(self):
    try:
      super().run()
    except Exception as error:  # any failure: the kernel is optional
      print(f"jrnn: the CPU kernel was not built ({error}); jrnn runs on the XLA scan")


setup(ext_modules=_extensions(), cmdclass={"build_ext": _BuildExt})
