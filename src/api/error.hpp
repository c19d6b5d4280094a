// Thread-local error messages: every failing entry point records a sentence
// naming the argument and its value before it returns the status.
#pragma once

#include "sageattn/sageattn.h"

namespace sageattn::api {

// printf-style; returns `status` so that `return fail(...)` reads naturally.
sageattn_status fail(sageattn_status status, const char* format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

void clear_error();

}  // namespace sageattn::api
