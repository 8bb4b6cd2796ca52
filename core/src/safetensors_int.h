/* safetensors_int.h — what the safetensors reader (safetensors.c) and
 * writer (safetensors_write.c) share.  Not installed. */
#ifndef REFIT_SAFETENSORS_INT_H
#define REFIT_SAFETENSORS_INT_H

/* The header key that holds the file's string metadata, not a tensor. */
#define ST_META "__metadata__"
/* Outside names in messages are cut so that the context around them
 * (file, reason) survives the 1 KiB error buffer. */
#define NAME_FMT "%.200s"

#endif
