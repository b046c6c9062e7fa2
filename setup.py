"""Builds the extension ckptguard._core with this repository's CMake (see
pyproject.toml): configure a release build in the build folder setuptools
gives, build the one target, and copy the module where setuptools wants it."""
import os
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        build_dir = os.path.abspath(os.path.join(self.build_temp, "cmake"))
        subprocess.check_call([
            "cmake", "-S", ROOT, "-B", build_dir, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
            "-DCKPTGUARD_BUILD_TESTS=OFF", "-DCKPTGUARD_PYTHON_PACKAGE=ON", "-DPython3_EXECUTABLE=" + sys.executable,
        ])
        subprocess.check_call(["cmake", "--build", build_dir, "--target", "ckptguard_python",
                               "-j", str(os.cpu_count() or 1)])
        built = os.path.join(build_dir, "python", "ckptguard", os.path.basename(self.get_ext_filename(ext.name)))
        target = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(built, target)


setup(ext_modules=[Extension("ckptguard._core", sources=[])], cmdclass={"build_ext": CMakeBuild})
