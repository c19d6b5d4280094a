# Installs the build into a scratch prefix, then configures, builds and runs
# the consumer project against it, with the same toolchain (and, when
# cross-compiling, running the program through the same emulator, e.g. Wine).
function(step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}")
  endif()
endfunction()
set(toolchain)
if(TOOLCHAIN_FILE)
  set(toolchain -DCMAKE_TOOLCHAIN_FILE=${TOOLCHAIN_FILE})
endif()
file(REMOVE_RECURSE ${WORK_DIR})
step(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${WORK_DIR}/prefix --config ${CONFIG})
step(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/build -G ${GENERATOR} -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix
     -DCMAKE_BUILD_TYPE=${CONFIG} ${toolchain})
step(${CMAKE_COMMAND} --build ${WORK_DIR}/build --config ${CONFIG})
step(${EMULATOR} ${WORK_DIR}/build/consumer${EXE_SUFFIX})
