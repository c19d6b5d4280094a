"""The SageAttention API this package implements.

The package's version is this API version followed by the library's own
release: "2.2.0" + "0.1.0" = "2.2.0.0.1.0" (a wheel adds its local label,
"2.2.0.0.1.0+cu13"). So clients that gate on the reference's version
(diffusers enables its sage backends from `sageattention >= 2.1.1`) see the
API they are written against, while every release of ours has a version of
its own, above the reference's 2.2.0 and below a 2.2.1 it does not implement.
docs/INSTALL.md describes the scheme.

Raise it only when the package implements every function and argument of
that reference release. scripts/wheel_version.py and CMakeLists.txt read the
line below as text: keep its form.
"""

API_VERSION = "2.2.0"
