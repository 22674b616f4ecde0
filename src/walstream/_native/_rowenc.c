/* walstream._native._rowenc: one walstream.v1 Row written to wire bytes in C (see delivery/v1/wire.py,
 * the reference). Plain C against the CPython API: no build dependency beyond a C compiler.
 *
 * encode_row(cells, kinds, slow) -> bytes | None
 *   cells: the tuple of Cell (kind str, data bytes | None) pgoutput sent;
 *   kinds: one byte per column, K_* below; K_SLOW columns are written by slow[i](data) (the Python
 *          encoder of that column, returning framed bytes);
 *   None: this row needs the Python path (a value that does not parse the strict way PostgreSQL writes it,
 *         a binary column, a slow encoder that raised, a column count that does not match). The caller
 *         then encodes the row in Python, which gives the same bytes or raises the same errors.
 */
#include "_rowenc.h"

int buf_reserve(Buf *b, Py_ssize_t extra) {
    if (b->len + extra <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap * 2;
    while (cap < b->len + extra)
        cap *= 2;
    char *p;
    if (b->data == b->stack) {
        p = PyMem_Malloc((size_t)cap);
        if (p != NULL)
            memcpy(p, b->data, (size_t)b->len);
    } else {
        p = PyMem_Realloc(b->data, (size_t)cap);
    }
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

/* -?[0-9]+ within int64, as PostgreSQL writes int2/int4/int8; 0 on anything else. */
static int parse_int64(const char *s, Py_ssize_t n, int64_t *out) {
    Py_ssize_t i = 0;
    int neg = 0;
    if (n > 0 && s[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (i == n || n - i > 19)
        return 0;
    uint64_t v = 0;
    for (; i < n; i++) {
        unsigned d = (unsigned char)s[i] - '0';
        if (d > 9)
            return 0;
        v = v * 10 + d;
    }
    if (neg) {
        if (v > (uint64_t)INT64_MAX + 1)
            return 0;
        *out = (int64_t)(0 - v);
    } else {
        if (v > (uint64_t)INT64_MAX)
            return 0;
        *out = (int64_t)v;
    }
    return 1;
}


static int digits(const char *s, int n, int64_t *out) {
    int64_t v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 1;
}

static int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* typed.parse_timestamp's common case, nothing else: 'YYYY-MM-DD HH:MM:SS[.f{1,6}]' (with_zone: then '+00'),
 * ASCII digits only, as microseconds since 1970 by the same arithmetic (typed.days_from_civil). 0: any other
 * text (infinity, BC, another zone, a 5-digit year, ...), which the column's Python encoder writes. */
static int parse_timestamp_common(const char *s, Py_ssize_t n, int with_zone, int64_t *us) {
    Py_ssize_t end = n;
    if (with_zone) {
        if (n < 3 || s[n - 3] != '+' || s[n - 2] != '0' || s[n - 1] != '0')
            return 0;
        end = n - 3;
    }
    if (!(end == 19 || (end >= 21 && end <= 26 && s[19] == '.')))
        return 0;
    if (s[4] != '-' || s[7] != '-' || s[10] != ' ' || s[13] != ':' || s[16] != ':')
        return 0;
    int64_t year, month, day, hour, minute, second, frac = 0;
    if (!digits(s, 4, &year) || !digits(s + 5, 2, &month) || !digits(s + 8, 2, &day) || !digits(s + 11, 2, &hour) ||
        !digits(s + 14, 2, &minute) || !digits(s + 17, 2, &second))
        return 0;
    if (end > 19) {
        if (!digits(s + 20, (int)(end - 20), &frac))
            return 0;
        for (Py_ssize_t i = end - 20; i < 6; i++)
            frac *= 10; /* '.25' is 250000 us */
    }
    int64_t y = year - (month <= 2);
    int64_t era = floor_div(y, 400);
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = era * 146097 + doe - 719468;
    *us = ((days * 1440 + hour * 60 + minute) * 60 + second) * 1000000 + frac;
    return 1;
}

/* One text value of kind `kind` into b (framed as a Row.values element): 1 written, 0 it needs the Python
 * path, -1 a Python error is set. K_SLOW calls slow(data); data NULL: a bytes object of s is made for it. */
int rowenc_text_value(Buf *b, unsigned char kind, const char *s, Py_ssize_t n, PyObject *slow, PyObject *data) {
    switch (kind) {
    case K_SINT64: {
        int64_t v;
        if (!parse_int64(s, n, &v))
            return 0;
        uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
        if (buf_reserve(b, 13) < 0)
            return -1;
        b->data[b->len++] = TAG_ROW_VALUES;
        b->data[b->len++] = (char)(1 + varint_size(z));
        b->data[b->len++] = TAG_VALUE_INT64;
        put_varint(b, z);
        break;
    }
    case K_NUMERIC:
    case K_TEXT:
    case K_JSON: {
        unsigned char tag = kind == K_NUMERIC ? TAG_VALUE_NUMERIC : kind == K_TEXT ? TAG_VALUE_TEXT : TAG_VALUE_JSON;
        uint64_t inner = 1 + (uint64_t)varint_size((uint64_t)n) + (uint64_t)n;
        if (buf_reserve(b, 1 + 10 + 1 + 10 + n) < 0)
            return -1;
        b->data[b->len++] = TAG_ROW_VALUES;
        put_varint(b, inner);
        b->data[b->len++] = (char)tag;
        put_varint(b, (uint64_t)n);
        memcpy(b->data + b->len, s, (size_t)n);
        b->len += n;
        break;
    }
    case K_BOOL: {
        if (n != 1 || (s[0] != 't' && s[0] != 'f'))
            return 0;
        if (buf_reserve(b, 4) < 0)
            return -1;
        b->data[b->len] = TAG_ROW_VALUES;
        b->data[b->len + 1] = 2;
        b->data[b->len + 2] = TAG_VALUE_BOOL;
        b->data[b->len + 3] = s[0] == 't';
        b->len += 4;
        break;
    }
    case K_TIMESTAMP:
    case K_TIMESTAMPTZ: {
        int64_t v;
        if (!parse_timestamp_common(s, n, kind == K_TIMESTAMPTZ, &v))
            goto slow; /* the column's Python encoder (wire.py) writes what this does not read */
        uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
        if (buf_reserve(b, 13) < 0)
            return -1;
        b->data[b->len++] = TAG_ROW_VALUES;
        b->data[b->len++] = (char)(1 + varint_size(z));
        b->data[b->len++] = kind == K_TIMESTAMPTZ ? TAG_VALUE_TIMESTAMPTZ_US : TAG_VALUE_TIMESTAMP_US;
        put_varint(b, z);
        break;
    }
    case K_SLOW:
    slow: {
        PyObject *arg = data != NULL ? Py_NewRef(data) : PyBytes_FromStringAndSize(s, n);
        if (arg == NULL)
            return -1;
        PyObject *out = PyObject_CallOneArg(slow, arg);
        Py_DECREF(arg);
        if (out == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_Exception))
                return -1; /* KeyboardInterrupt, MemoryError...: not a value problem */
            PyErr_Clear();
            return 0;
        }
        if (!PyBytes_Check(out)) {
            Py_DECREF(out);
            return 0;
        }
        Py_ssize_t m = PyBytes_GET_SIZE(out);
        if (buf_reserve(b, m) < 0) {
            Py_DECREF(out);
            return -1;
        }
        memcpy(b->data + b->len, PyBytes_AS_STRING(out), (size_t)m);
        b->len += m;
        Py_DECREF(out);
        break;
    }
    default:
        return 0;
    }
    return 1;
}

/* The Row of cells into b: 1 written, 0 this row needs the Python path, -1 a Python error is set. */
static int write_row(Buf *b, PyObject *cells, const char *kinds, Py_ssize_t nkinds, PyObject *slow) {
    Py_ssize_t ncols = PyTuple_GET_SIZE(cells);
    if (ncols != nkinds || PyTuple_GET_SIZE(slow) != nkinds)
        return 0;
    for (Py_ssize_t i = 0; i < ncols; i++) {
        PyObject *cell = PyTuple_GET_ITEM(cells, i);
        if (!PyTuple_Check(cell) || PyTuple_GET_SIZE(cell) != 2)
            return 0;
        PyObject *kind = PyTuple_GET_ITEM(cell, 0), *data = PyTuple_GET_ITEM(cell, 1);
        if (!PyUnicode_Check(kind) || PyUnicode_GET_LENGTH(kind) != 1)
            return 0;
        Py_UCS4 k = PyUnicode_READ_CHAR(kind, 0);
        if (k == 'n' || k == 'u') {
            if (buf_reserve(b, 4) < 0)
                return -1;
            memcpy(b->data + b->len, k == 'n' ? V_NULL : V_TOAST, 4);
            b->len += 4;
            continue;
        }
        if (k != 't' || !PyBytes_Check(data))
            return 0;
        int ok = rowenc_text_value(b, (unsigned char)kinds[i], PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data),
                                   PyTuple_GET_ITEM(slow, i), data);
        if (ok <= 0)
            return ok;
    }
    return 1;
}

void buf_free(Buf *b) {
    if (b->data != b->stack)
        PyMem_Free(b->data);
}

static PyObject *encode_row(PyObject *self, PyObject *args) {
    PyObject *cells, *slow;
    const char *kinds;
    Py_ssize_t nkinds;
    if (!PyArg_ParseTuple(args, "O!y#O!:encode_row", &PyTuple_Type, &cells, &kinds, &nkinds, &PyTuple_Type,
                          &slow))
        return NULL;
    Buf b = {NULL, 0, sizeof(b.stack), {0}};
    b.data = b.stack;
    int ok = write_row(&b, cells, kinds, nkinds, slow);
    PyObject *result = ok > 0 ? PyBytes_FromStringAndSize(b.data, b.len) : ok == 0 ? Py_NewRef(Py_None) : NULL;
    buf_free(&b);
    return result;
}

/* insert_event(op_field, lsn, txn_fields, ordinal, relation_field, cells, kinds, slow) -> bytes | None:
 * adapter.Encoder._row_item for an INSERT in one call: the framed Batch.events element (field 2) holding
 * the Event's fields in field order, defaults left out, and the new row; None: the row needs Python. */
/* txn_fields(xid, commit_lsn, commit_time_us) -> Event fields 3-5 (adapter.Encoder._txn_fields: a field is left
 * out when 0), or None for a value it does not write (negative xid or LSN, beyond 64 bits): Python does. */
static PyObject *txn_fields(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "txn_fields(xid, commit_lsn, commit_time_us)");
        return NULL;
    }
    unsigned long long xid = PyLong_AsUnsignedLongLong(args[0]);
    unsigned long long lsn = xid == (unsigned long long)-1 && PyErr_Occurred() ? 0 : PyLong_AsUnsignedLongLong(args[1]);
    long long time = PyErr_Occurred() ? 0 : PyLong_AsLongLong(args[2]);
    if (PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError) && !PyErr_ExceptionMatches(PyExc_TypeError))
            return NULL;
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    char out[33]; /* three tags and three varints of at most 10 bytes */
    Buf b; /* put_varint's buffer over `out` (its own stack left unused) */
    b.data = out;
    b.len = 0;
    b.cap = (Py_ssize_t)sizeof(out);
    if (xid) {
        b.data[b.len++] = TAG_EVENT_XID;
        put_varint(&b, xid);
    }
    if (lsn) {
        b.data[b.len++] = TAG_EVENT_COMMIT_LSN;
        put_varint(&b, lsn);
    }
    if (time) {
        b.data[b.len++] = TAG_EVENT_COMMIT_TIME_US;
        put_varint(&b, (uint64_t)time); /* a negative int64 as its two's complement, as protobuf does */
    }
    return PyBytes_FromStringAndSize(out, b.len);
}

static PyObject *insert_event(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "insert_event takes 8 arguments");
        return NULL;
    }
    PyObject *op = args[0], *txn = args[2], *relf = args[4], *cells = args[5], *kinds = args[6], *slow = args[7];
    if (!PyBytes_Check(op) || !PyBytes_Check(txn) || !PyBytes_Check(relf) || !PyTuple_Check(cells) ||
        !PyBytes_Check(kinds) || !PyTuple_Check(slow)) {
        PyErr_SetString(PyExc_TypeError, "insert_event: bytes, int, bytes, int, bytes, tuple, bytes, tuple");
        return NULL;
    }
    uint64_t lsn = PyLong_AsUnsignedLongLong(args[1]);
    if (lsn == (uint64_t)-1 && PyErr_Occurred())
        return NULL;
    uint64_t ordinal = PyLong_AsUnsignedLongLong(args[3]);
    if (ordinal == (uint64_t)-1 && PyErr_Occurred())
        return NULL;
    Buf b = {NULL, 0, sizeof(b.stack), {0}};
    b.data = b.stack;
    int ok = write_row(&b, cells, PyBytes_AS_STRING(kinds), PyBytes_GET_SIZE(kinds), slow);
    if (ok <= 0) {
        buf_free(&b);
        return ok == 0 ? Py_NewRef(Py_None) : NULL;
    }
    Py_ssize_t nop = PyBytes_GET_SIZE(op), ntxn = PyBytes_GET_SIZE(txn), nrel = PyBytes_GET_SIZE(relf);
    uint64_t body = (uint64_t)(nop + ntxn + nrel) + (lsn ? 1 + (uint64_t)varint_size(lsn) : 0) +
                    (ordinal ? 1 + (uint64_t)varint_size(ordinal) : 0) + 1 + (uint64_t)varint_size((uint64_t)b.len) +
                    (uint64_t)b.len;
    Py_ssize_t total = 1 + varint_size(body) + (Py_ssize_t)body;
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL) {
        buf_free(&b);
        return NULL;
    }
    Buf o = {PyBytes_AS_STRING(out), 0, total, {0}}; /* exact size: put_varint needs no reserve */
    o.data[o.len++] = TAG_BATCH_EVENTS;
    put_varint(&o, body);
    memcpy(o.data + o.len, PyBytes_AS_STRING(op), (size_t)nop);
    o.len += nop;
    if (lsn) {
        o.data[o.len++] = TAG_EVENT_LSN;
        put_varint(&o, lsn);
    }
    memcpy(o.data + o.len, PyBytes_AS_STRING(txn), (size_t)ntxn);
    o.len += ntxn;
    if (ordinal) {
        o.data[o.len++] = TAG_EVENT_ORDINAL;
        put_varint(&o, ordinal);
    }
    memcpy(o.data + o.len, PyBytes_AS_STRING(relf), (size_t)nrel);
    o.len += nrel;
    o.data[o.len++] = TAG_EVENT_NEW;
    put_varint(&o, (uint64_t)b.len);
    memcpy(o.data + o.len, b.data, (size_t)b.len);
    buf_free(&b);
    return out;
}

/* --- plain_insert(buf): decoder.plain_insert in C ---------------------------------------------------------
 * configure(Cell, null_cell, unchanged_cell, fallback) once; then plain_insert(buf) gives (relation id, tuple
 * of Cell) for a well-formed Insert, and for anything else (another message, a truncated or corrupted one)
 * returns fallback(buf): the Python decoder, which returns None or raises its clear error. */
static PyTypeObject *cell_type = NULL;
static PyObject *null_cell = NULL, *unchanged_cell = NULL, *insert_fallback = NULL, *kind_t = NULL, *kind_b = NULL;

static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *cls, *null_c, *unchanged_c, *fallback;
    if (!PyArg_ParseTuple(args, "O!OOO:configure", &PyType_Type, &cls, &null_c, &unchanged_c, &fallback))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)cls, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "configure: Cell must be a tuple subclass");
        return NULL;
    }
    Py_XSETREF(cell_type, (PyTypeObject *)Py_NewRef(cls));
    Py_XSETREF(null_cell, Py_NewRef(null_c));
    Py_XSETREF(unchanged_cell, Py_NewRef(unchanged_c));
    Py_XSETREF(insert_fallback, Py_NewRef(fallback));
    Py_RETURN_NONE;
}

static PyObject *plain_insert(PyObject *self, PyObject *buf) {
    if (insert_fallback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "walstream._native: plain_insert before configure");
        return NULL;
    }
    if (!PyBytes_Check(buf))
        return PyObject_CallOneArg(insert_fallback, buf);
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(buf);
    Py_ssize_t n = PyBytes_GET_SIZE(buf);
    if (n <= 7 || s[0] != 'I' || s[5] != 'N')
        return PyObject_CallOneArg(insert_fallback, buf);
    Py_ssize_t natts = (Py_ssize_t)s[6] << 8 | s[7], pos = 8;
    PyObject *cells = PyTuple_New(natts);
    if (cells == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < natts; i++) {
        if (pos >= n)
            goto fallback;
        unsigned char k = s[pos];
        if (k == 'n' || k == 'u') {
            PyTuple_SET_ITEM(cells, i, Py_NewRef(k == 'n' ? null_cell : unchanged_cell));
            pos++;
            continue;
        }
        if ((k != 't' && k != 'b') || pos + 5 > n)
            goto fallback;
        int32_t len = (int32_t)((uint32_t)s[pos + 1] << 24 | (uint32_t)s[pos + 2] << 16 | (uint32_t)s[pos + 3] << 8 |
                                (uint32_t)s[pos + 4]);
        if (len < 0 || len > n - (pos + 5))
            goto fallback;
        PyObject *data = PyBytes_FromStringAndSize((const char *)s + pos + 5, len);
        if (data == NULL)
            goto error;
        PyObject *cell = cell_type->tp_alloc(cell_type, 2);
        if (cell == NULL) {
            Py_DECREF(data);
            goto error;
        }
        PyTuple_SET_ITEM(cell, 0, Py_NewRef(k == 't' ? kind_t : kind_b));
        PyTuple_SET_ITEM(cell, 1, data);
        PyTuple_SET_ITEM(cells, i, cell);
        pos += 5 + len;
    }
    if (pos != n)
        goto fallback;
    uint32_t relid = (uint32_t)s[1] << 24 | (uint32_t)s[2] << 16 | (uint32_t)s[3] << 8 | (uint32_t)s[4];
    PyObject *rel = PyLong_FromUnsignedLong(relid);
    if (rel == NULL)
        goto error;
    PyObject *out = PyTuple_New(2);
    if (out == NULL) {
        Py_DECREF(rel);
        goto error;
    }
    PyTuple_SET_ITEM(out, 0, rel);
    PyTuple_SET_ITEM(out, 1, cells);
    return out;
fallback:
    Py_DECREF(cells); /* unfilled slots are NULL: tuple dealloc skips them */
    return PyObject_CallOneArg(insert_fallback, buf);
error:
    Py_DECREF(cells);
    return NULL;
}

/* --- read_copy_data(conn): one CopyData from libpq, called through psycopg2's own libpq ----------------------
 * set_libpq(PQgetCopyData address, PQfreemem address) once (copyboth.py finds them with ctypes: no libpq
 * headers or link here). read_copy_data(conn pointer) -> (data_start, pgoutput message) for an XLogData,
 * the whole message as bytes for anything else (a keepalive: copyboth.py reads it), or PQgetCopyData's
 * result n <= 0 as an int. One copy out of libpq's buffer, straight into the message's bytes. */
typedef int (*get_copy_data_fn)(void *, char **, int);
typedef void (*freemem_fn)(void *);
static get_copy_data_fn pq_get_copy_data = NULL;
static freemem_fn pq_freemem = NULL;

static PyObject *set_libpq(PyObject *self, PyObject *args) {
    unsigned long long get_addr, free_addr;
    if (!PyArg_ParseTuple(args, "KK:set_libpq", &get_addr, &free_addr))
        return NULL;
    if (get_addr == 0 || free_addr == 0) {
        PyErr_SetString(PyExc_ValueError, "set_libpq: a function address is 0");
        return NULL;
    }
    pq_get_copy_data = (get_copy_data_fn)(uintptr_t)get_addr;
    pq_freemem = (freemem_fn)(uintptr_t)free_addr;
    Py_RETURN_NONE;
}

static PyObject *read_copy_data(PyObject *self, PyObject *arg) {
    if (pq_get_copy_data == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "walstream._native: read_copy_data before set_libpq");
        return NULL;
    }
    void *conn = PyLong_AsVoidPtr(arg);
    if (conn == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "read_copy_data: a NULL connection");
        return NULL;
    }
    char *buf = NULL;
    int n = pq_get_copy_data(conn, &buf, 1); /* async: never blocks */
    if (n <= 0)
        return PyLong_FromLong(n);
    PyObject *out;
    if (buf[0] == 'w' && n > 25) {
        const unsigned char *u = (const unsigned char *)buf;
        uint64_t lsn = 0;
        for (int i = 1; i < 9; i++)
            lsn = lsn << 8 | u[i];
        PyObject *data = PyBytes_FromStringAndSize(buf + 25, n - 25);
        PyObject *start = data == NULL ? NULL : PyLong_FromUnsignedLongLong(lsn);
        out = start == NULL ? NULL : PyTuple_Pack(2, start, data);
        Py_XDECREF(start);
        Py_XDECREF(data);
    } else {
        out = PyBytes_FromStringAndSize(buf, n);
    }
    pq_freemem(buf);
    return out;
}

static PyMethodDef methods[] = {
    {"set_libpq", set_libpq, METH_VARARGS, "set_libpq(PQgetCopyData address, PQfreemem address)"},
    {"read_copy_data", read_copy_data, METH_O,
     "read_copy_data(conn) -> (data_start, message) | the raw message | PQgetCopyData's n <= 0"},
    {"insert_event", (PyCFunction)(void (*)(void))insert_event, METH_FASTCALL,
     "insert_event(op_field, lsn, txn_fields, ordinal, relation_field, cells, kinds, slow) -> bytes | None"},
    {"txn_fields", (PyCFunction)(void (*)(void))txn_fields, METH_FASTCALL,
     "txn_fields(xid, commit_lsn, commit_time_us) -> Event fields 3-5 | None"},
    {"configure", configure, METH_VARARGS, "configure(Cell, null_cell, unchanged_cell, fallback)"},
    {"plain_insert", plain_insert, METH_O, "plain_insert(buf) -> (relation id, cells) | fallback(buf)"},
    {"encode_row", encode_row, METH_VARARGS,
     "encode_row(cells, kinds, slow) -> Row bytes, or None: encode this row in Python."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rowenc", "walstream.v1 rows in C.", -1, methods};

PyMODINIT_FUNC PyInit__rowenc(void) {
    kind_t = PyUnicode_InternFromString("t");
    kind_b = PyUnicode_InternFromString("b");
    if (kind_t == NULL || kind_b == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddFunctions(m, snapchunk_methods) < 0 || /* _snapchunk.c */
        PyModule_AddFunctions(m, insertrun_methods) < 0) { /* _insertrun.c */
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "K_SLOW", K_SLOW) < 0 || PyModule_AddIntConstant(m, "K_SINT64", K_SINT64) < 0 ||
        PyModule_AddIntConstant(m, "K_NUMERIC", K_NUMERIC) < 0 || PyModule_AddIntConstant(m, "K_TEXT", K_TEXT) < 0 ||
        PyModule_AddIntConstant(m, "K_JSON", K_JSON) < 0 || PyModule_AddIntConstant(m, "K_BOOL", K_BOOL) < 0 ||
        PyModule_AddIntConstant(m, "K_TIMESTAMP", K_TIMESTAMP) < 0 ||
        PyModule_AddIntConstant(m, "K_TIMESTAMPTZ", K_TIMESTAMPTZ) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
