"""Check a built fastgd wheel's contents: ``python tools/check_wheel.py dist/fastgd-*.whl``.

What a user's pip install gets: the Python modules, the compiled extensions (every SIMD variant
this platform builds, without debug info), the stubs and py.typed, the license; no generated C
and no Cython sources.  On Linux a repaired wheel (auditwheel) carries a manylinux tag and the
OpenMP runtime it links, grafted under ``fastgd.libs/``.  Exits nonzero naming each problem.
"""
import re
import struct
import sys
import zipfile

# ELF section names that hold debug information (DWARF)
_DEBUG = (b".debug_info", b".debug_line", b".debug_str")


def _elf_sections(data):
    """Section names of an ELF shared object (64-bit little-endian, as x86_64/aarch64 Linux)."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    def header(i):
        off = shoff + i * shentsize
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", data, off)
        return name, offset, size
    _, stroff, strsize = header(shstrndx)
    strtab = data[stroff:stroff + strsize]
    names = []
    for i in range(shnum):
        name = header(i)[0]
        names.append(strtab[name:strtab.index(b"\0", name)])
    return names


def check(path):
    problems = []
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        for n in names:
            if re.search(r"\.(c|pyx|pxi|pxd|cpp|h)$", n):
                problems.append("source file in the wheel: %s" % n)
        if not any(re.search(r"\.dist-info/licenses/LICENSE$", n) for n in names):
            problems.append("no LICENSE under .dist-info/licenses/")
        for required in ("fastgd/__init__.py", "fastgd/py.typed", "fastgd/_cython/__init__.pyi",
                         "fastgd/_cython/_core.pyi", "fastgd/tf.pyi"):
            if required not in names:
                problems.append("missing: %s" % required)
        exts = [n for n in names if re.search(r"fastgd/_cython/[^/]+\.(so|pyd)$", n)]
        for stem in ("_core", "dense", "_rules_base", "_tf_base"):
            if not any(re.search(r"/%s\.[^/]*(so|pyd)$" % stem, n) for n in exts):
                problems.append("extension module missing: fastgd._cython.%s" % stem)
        linux = any(n.endswith(".so") for n in exts)
        if linux and re.search(r"x86_64", path):
            for stem in ("_rules_avx2", "_rules_avx512", "_tf_avx2", "_tf_avx512"):
                if not any("/%s." % stem in n for n in exts):
                    problems.append("SIMD variant missing: fastgd._cython.%s" % stem)
        for n in exts:
            sections = _elf_sections(zf.read(n)) if n.endswith(".so") else None
            if sections is not None and any(s in sections for s in _DEBUG):
                problems.append("debug info in %s" % n)
        if linux and "manylinux" in path:
            grafted = [n for n in names if n.startswith("fastgd.libs/")]
            if not grafted:
                problems.append("a repaired wheel without fastgd.libs/ (the OpenMP runtime is not grafted)")
            size = sum(zf.getinfo(n).file_size for n in names)
            print("%s: %d files, %.1f MB uncompressed; grafted: %s" % (path, len(names), size / 1e6,
                                                                         ", ".join(grafted) or "none"))
        elif linux:
            print("%s: %d files (not a repaired manylinux wheel)" % (path, len(names)))
    return problems


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/check_wheel.py WHEEL")
    found = check(sys.argv[1])
    for p in found:
        print("wheel check: " + p, file=sys.stderr)
    sys.exit(1 if found else 0)
