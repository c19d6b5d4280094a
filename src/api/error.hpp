// Thread-local error messages: every failing entry point records a sentence
// naming the argument and its value before it returns the status.
#pragma once

#include <cstdio>  // MinGW: __MINGW_PRINTF_FORMAT, the printf dialect its vsnprintf speaks

#include "sageattn/sageattn.h"

namespace sageattn::api {

// printf-style; returns `status` so that `return fail(...)` reads naturally.
sageattn_status fail(sageattn_status status, const char* format, ...)
#if defined(__MINGW_PRINTF_FORMAT)
    __attribute__((format(__MINGW_PRINTF_FORMAT, 2, 3)))
#elif defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

void clear_error();

}  // namespace sageattn::api
