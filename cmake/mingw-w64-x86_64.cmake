# Cross-compiles for Windows x64 with MinGW-w64 (Debian's g++-mingw-w64-x86-64-posix)
# and runs what it builds under Wine: how CI proves, without Windows, that the
# library, its C ABI exports, the CMake package and the CPU tests work there.
# scripts/test.sh uses it:
#
#   cmake -S . -B build-mingw -DCMAKE_TOOLCHAIN_FILE=cmake/mingw-w64-x86_64.cmake \
#         -DSAGEATTN_CUDA=OFF -DSAGEATTN_GTEST_SOURCE_DIR=/usr/src/googletest
#
# The release wheels for Windows are built with MSVC and nvcc instead (docs/INSTALL.md).
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR AMD64)

set(_mingw x86_64-w64-mingw32)
# The -posix compilers: std::thread and std::mutex need the posix threading model.
set(CMAKE_C_COMPILER ${_mingw}-gcc-posix)
set(CMAKE_CXX_COMPILER ${_mingw}-g++-posix)
set(CMAKE_RC_COMPILER ${_mingw}-windres)

set(CMAKE_FIND_ROOT_PATH /usr/${_mingw})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
# Packages also from CMAKE_PREFIX_PATH as given: the consumer test finds the
# sageattn it has just installed into a scratch prefix.
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)

# The GCC runtime (libstdc++, libgcc, winpthread) goes inside each binary, as the
# MSVC runtime does in the wheel's DLL: they need only Windows' own DLLs.
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static")
set(CMAKE_SHARED_LINKER_FLAGS_INIT "-static")

# ctest (and the consumer test) run the .exe files through Wine.
find_program(SAGEATTN_WINE NAMES wine wine64)
if(SAGEATTN_WINE)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${SAGEATTN_WINE})
endif()
