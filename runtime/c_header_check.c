/* runtime/c_header_check.c — kiln/kiln.h must stay plain C (C99, -pedantic): an app in C
 * includes it through the generated model.h. Built as an object library; nothing links it. */
#include "kiln/kiln.h"

int kiln_c_header_check(void);
int kiln_c_header_check(void) {
  kiln_session_params sp = kiln_session_default_params();
  kiln_sampler_params p = kiln_sampler_default_params();
  kiln_chat_message m = {"user", "hi"};
  return sp.n_threads + p.top_k + (m.role != 0) + (int)KILN_ERR_INTERNAL + KILN_ALL_STREAMS;
}
