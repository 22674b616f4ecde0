/* Declarations shared by the C sources of walstream._native._rowenc (one extension module): the value kinds,
 * the growable byte buffer and the value writer of _rowenc.c, and the functions _snapchunk.c and _insertrun.c add. */
#ifndef WALSTREAM_ROWENC_H
#define WALSTREAM_ROWENC_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_tags.h"

enum { K_SLOW = 0, K_SINT64 = 1, K_NUMERIC = 2, K_TEXT = 3, K_JSON = 4, K_BOOL = 5, K_TIMESTAMP = 6, K_TIMESTAMPTZ = 7 };

typedef struct {
    char *data;
    Py_ssize_t len, cap;
    char stack[1024];
} Buf;

int buf_reserve(Buf *b, Py_ssize_t extra);
void buf_free(Buf *b);
int rowenc_text_value(Buf *b, unsigned char kind, const char *s, Py_ssize_t n, PyObject *slow, PyObject *data);

/* Row.values element: Value{null: true} / Value{unchanged_toast: true} */
static const char V_NULL[] = {TAG_ROW_VALUES, 2, TAG_VALUE_NULL, 1};
static const char V_TOAST[] = {TAG_ROW_VALUES, 2, TAG_VALUE_UNCHANGED_TOAST, 1};

static inline void put_varint(Buf *b, uint64_t v) {
    while (v > 127) {
        b->data[b->len++] = (char)((v & 127) | 128);
        v >>= 7;
    }
    b->data[b->len++] = (char)v;
}

static inline int varint_size(uint64_t v) {
    int n = 1;
    while (v > 127) {
        v >>= 7;
        n++;
    }
    return n;
}

static inline uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

extern PyMethodDef snapchunk_methods[]; /* _snapchunk.c: added to the module at init */
extern PyMethodDef insertrun_methods[]; /* _insertrun.c: added to the module at init */

#endif
