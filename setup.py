"""Builds the Cython fast path. A compile error fails the build: there is no silent fallback here
(the run-time fallback to the std backend is only for an extension that is absent, e.g. a source
checkout used without `make install`)."""
from Cython.Build import cythonize
from setuptools import Extension, setup

# The IPoIB fast path is four modules that cimport one another (ipoib/*.pxd): the context's fields,
# the rings, the receive path, and the provider that ipoib imports.
extensions = [
    Extension(
        f"ipoib.{name}",
        [f"ipoib/{name}.pyx"],
        include_dirs=["ipoib"],
        depends=["ipoib/csum.h", "ipoib/tunwriter.h"],
        extra_compile_args=["-O3"],
    )
    for name in ("_fastctx", "_fastring", "_fasttun", "_fastrx", "_fastpath")
] + [Extension("fabric._wirefast", ["fabric/_wirefast.pyx"], include_dirs=["fabric"], depends=["fabric/crcfold.h"],
               extra_compile_args=["-O3"]),
               Extension("fabric._corefast", ["fabric/_corefast.pyx"], extra_compile_args=["-O3"]),
               Extension("fabric._structfast", ["fabric/_structfast.pyx"], extra_compile_args=["-O3"]),
               Extension("fabric.devices._smafast", ["fabric/devices/_smafast.pyx"], include_dirs=["fabric"],
                         extra_compile_args=["-O3"]),
               Extension("fabric.simproto._simfast", ["fabric/simproto/_simfast.pyx"], include_dirs=["fabric"],
                         extra_compile_args=["-O3"]),
               Extension("fabric.host._localfast", ["fabric/host/_localfast.pyx"], extra_compile_args=["-O3"])]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
