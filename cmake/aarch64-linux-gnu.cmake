# cmake/aarch64-linux-gnu.cmake — CMake toolchain file for 64-bit Arm Linux with Debian's
# cross compilers (g++-aarch64-linux-gnu, libc6-dev-arm64-cross):
#
#   cmake -S cmake/runtime-only -B build-rt-arm64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
#
# Code is for the Armv8-A baseline (any 64-bit Arm phone); kiln's model code carries the
# profile's CPU features, the runtime around it does not need them. Programs built with it
# run under qemu-user: `qemu-aarch64 -cpu max -L /usr/aarch64-linux-gnu PROGRAM`.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(KILN_CROSS_PREFIX aarch64-linux-gnu- CACHE STRING "prefix of the cross tools")
set(CMAKE_C_COMPILER ${KILN_CROSS_PREFIX}gcc)
set(CMAKE_CXX_COMPILER ${KILN_CROSS_PREFIX}g++)
set(CMAKE_AR ${KILN_CROSS_PREFIX}ar CACHE FILEPATH "")
set(CMAKE_RANLIB ${KILN_CROSS_PREFIX}ranlib CACHE FILEPATH "")

# Libraries and headers from the target's root only; programs (flatc) from the host.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# ctest and add_test run target programs through qemu.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -cpu max -L /usr/aarch64-linux-gnu)
