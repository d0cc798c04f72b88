# Removes the "target-cpu", "target-features" and "tune-cpu" function attributes from a
# bitcode module (clang adds its default CPU's to every function; kiln's codegen sets the
# target profile's). Usage: cmake -DLLVM_DIS=.. -DLLVM_AS=.. -DIN=a.bc -DOUT=b.bc -P this
execute_process(COMMAND ${LLVM_DIS} ${IN} -o - OUTPUT_VARIABLE ll RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${LLVM_DIS} ${IN} failed")
endif()
string(REGEX REPLACE " \"(target-cpu|target-features|tune-cpu)\"=\"[^\"]*\"" "" ll "${ll}")
if(ll MATCHES "\"(target-cpu|target-features|tune-cpu)\"")
  message(FATAL_ERROR "target attributes left in ${IN}")
endif()
file(WRITE ${OUT}.ll "${ll}")
execute_process(COMMAND ${LLVM_AS} ${OUT}.ll -o ${OUT} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${LLVM_AS} ${OUT}.ll failed")
endif()
