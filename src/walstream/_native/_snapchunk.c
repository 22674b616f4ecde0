/* A snapshot chunk in C, straight from the COPY text buffer the chunk reader got: no Python object per row or
 * per value. The references are snapshot/copytext.py (the COPY text format) and
 * delivery/v1/adapter.Encoder.snapshot_chunk (the framed SNAPSHOT Events); differential tests compare them.
 *
 * copy_rows(data, columns) -> int | None
 *   the number of rows when every line has `columns` tab-separated fields; None otherwise (the caller then
 *   parses in Python, which raises copytext's clear error). Scans without the GIL.
 * snapshot_events(data, columns, width, cancelled, head, relation_field, first, kinds, slow, piece_events,
 *                 piece_bytes) -> (pieces, counts, superseded) | None
 *   each row's first `width` columns as one Event(op=SNAPSHOT, new=row): head (op, lsn and transaction fields),
 *   ordinal first.., relation_field, the Row (values written by rowenc_text_value, as INSERT values); rows whose
 *   key (the columns after `width`, as a tuple of bytes or None) is in `cancelled` are left out and counted.
 *   The framed events (Batch.events elements) are packed into pieces of at most piece_events events and
 *   piece_bytes bytes (an event larger than that alone). None: a value needs the Python path.
 */
#include "_rowenc.h"

static const char SNAP_NULL[] = {TAG_ROW_VALUES, 2, TAG_VALUE_NULL, 1}; /* Value{null: true} */

/* Fields of one line [p, end): starts and ends of the first `columns`; the number of fields found. */
static Py_ssize_t split_line(const char *p, const char *end, Py_ssize_t columns, const char **starts,
                             const char **ends) {
    Py_ssize_t n = 0;
    for (;;) {
        const char *tab = memchr(p, '\t', (size_t)(end - p));
        const char *stop = tab != NULL ? tab : end;
        if (n < columns) {
            starts[n] = p;
            ends[n] = stop;
        }
        n++;
        if (tab == NULL)
            return n;
        p = tab + 1;
    }
}

static int octal(char c) { return c >= '0' && c <= '7'; }

static int hex_value(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* COPY text escapes decoded as copytext.unescape: \ooo (1-3 octal digits, the low byte), \xh or \xhh,
 * \b \f \n \r \t \v, a backslash and any other byte: that byte; a backslash ending the field stays. out has
 * room for n bytes (decoding never grows a field); returns the decoded length. */
static Py_ssize_t unescape(const char *s, Py_ssize_t n, char *out) {
    Py_ssize_t i = 0, o = 0;
    while (i < n) {
        char c = s[i];
        if (c != '\\' || i + 1 >= n) {
            out[o++] = c;
            i++;
            continue;
        }
        char d = s[i + 1];
        if (octal(d)) {
            unsigned v = 0;
            Py_ssize_t j = i + 1;
            for (int k = 0; k < 3 && j < n && octal(s[j]); k++, j++)
                v = v * 8 + (unsigned)(s[j] - '0');
            out[o++] = (char)(v & 0xFF);
            i = j;
        } else if (d == 'x' && i + 2 < n && hex_value(s[i + 2]) >= 0) {
            int v = hex_value(s[i + 2]);
            Py_ssize_t j = i + 3;
            if (j < n && hex_value(s[j]) >= 0)
                v = v * 16 + hex_value(s[j++]);
            out[o++] = (char)v;
            i = j;
        } else {
            out[o++] = d == 'b' ? '\b' : d == 'f' ? '\f' : d == 'n' ? '\n' : d == 'r' ? '\r' : d == 't' ? '\t'
                     : d == 'v' ? '\v' : d;
            i += 2;
        }
    }
    return o;
}

static int is_null(const char *s, const char *e) { return e - s == 2 && s[0] == '\\' && s[1] == 'N'; }

/* The end of the line starting at p (its newline, or the end of the data), as bytes.split(b"\n"). */
static const char *line_end(const char *p, const char *end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    return nl != NULL ? nl : end;
}

/* Lines of data as parse_rows counts them: a final empty line (after the last newline) is not a row. */
static const char *data_end(const char *data, Py_ssize_t n) {
    return n > 0 && data[n - 1] == '\n' ? data + n - 1 : data + n;
}

static PyObject *copy_rows(PyObject *self, PyObject *args) {
    const char *data;
    Py_ssize_t n, columns;
    if (!PyArg_ParseTuple(args, "y#n:copy_rows", &data, &n, &columns))
        return NULL;
    if (n == 0)
        return PyLong_FromLong(0);
    Py_ssize_t rows = 0;
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS
    const char *p = data, *end = data_end(data, n);
    for (;;) {
        const char *e = line_end(p, end);
        Py_ssize_t fields = 1;
        for (const char *t = p; (t = memchr(t, '\t', (size_t)(e - t))) != NULL; t++)
            fields++;
        if (fields != columns) {
            ok = 0;
            break;
        }
        rows++;
        if (e == end)
            break;
        p = e + 1;
    }
    Py_END_ALLOW_THREADS
    if (!ok)
        Py_RETURN_NONE;
    return PyLong_FromSsize_t(rows);
}

/* The key of a row (fields [width, columns)) as the window's cancellation set holds keys. */
static PyObject *row_key(const char **starts, const char **ends, Py_ssize_t width, Py_ssize_t columns, Buf *scratch) {
    PyObject *key = PyTuple_New(columns - width);
    if (key == NULL)
        return NULL;
    for (Py_ssize_t i = width; i < columns; i++) {
        PyObject *v;
        if (is_null(starts[i], ends[i])) {
            v = Py_NewRef(Py_None);
        } else {
            Py_ssize_t len = ends[i] - starts[i];
            scratch->len = 0;
            if (buf_reserve(scratch, len) < 0) {
                Py_DECREF(key);
                return NULL;
            }
            v = PyBytes_FromStringAndSize(scratch->data, unescape(starts[i], len, scratch->data));
            if (v == NULL) {
                Py_DECREF(key);
                return NULL;
            }
        }
        PyTuple_SET_ITEM(key, i - width, v);
    }
    return key;
}

/* One row's values into row: 1 written, 0 a value needs the Python path, -1 a Python error is set. */
static int write_values(Buf *row, const char **starts, const char **ends, Py_ssize_t width, const char *kinds,
                        PyObject *slow, Buf *scratch) {
    for (Py_ssize_t i = 0; i < width; i++) {
        const char *s = starts[i];
        Py_ssize_t len = ends[i] - s;
        if (memchr(s, '\\', (size_t)len) != NULL) {
            if (is_null(s, ends[i])) {
                if (buf_reserve(row, 4) < 0)
                    return -1;
                memcpy(row->data + row->len, SNAP_NULL, 4);
                row->len += 4;
                continue;
            }
            scratch->len = 0;
            if (buf_reserve(scratch, len) < 0)
                return -1;
            len = unescape(s, len, scratch->data);
            s = scratch->data;
        }
        int ok = rowenc_text_value(row, (unsigned char)kinds[i], s, len, PyTuple_GET_ITEM(slow, i), NULL);
        if (ok <= 0)
            return ok;
    }
    return 1;
}

typedef struct {
    PyObject *pieces, *counts;
    Buf piece;
    Py_ssize_t events;
} Pieces;

static int flush_piece(Pieces *p) {
    if (p->events == 0)
        return 0;
    PyObject *data = PyBytes_FromStringAndSize(p->piece.data, p->piece.len);
    PyObject *count = data == NULL ? NULL : PyLong_FromSsize_t(p->events);
    int failed = count == NULL || PyList_Append(p->pieces, data) < 0 || PyList_Append(p->counts, count) < 0;
    Py_XDECREF(data);
    Py_XDECREF(count);
    p->piece.len = 0;
    p->events = 0;
    return failed ? -1 : 0;
}

static PyObject *snapshot_events(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 11) {
        PyErr_SetString(PyExc_TypeError, "snapshot_events takes 11 arguments");
        return NULL;
    }
    PyObject *data = args[0], *cancelled = args[3], *head = args[4], *relf = args[5], *kinds = args[7],
             *slow = args[8];
    Py_ssize_t columns = PyLong_AsSsize_t(args[1]), width = PyLong_AsSsize_t(args[2]);
    Py_ssize_t piece_events = PyLong_AsSsize_t(args[9]), piece_bytes = PyLong_AsSsize_t(args[10]);
    uint64_t ordinal = PyLong_AsUnsignedLongLong(args[6]);
    if (PyErr_Occurred())
        return NULL;
    if (!PyBytes_Check(data) || !PyBytes_Check(head) || !PyBytes_Check(relf) || !PyBytes_Check(kinds) ||
        !PyTuple_Check(slow) || (cancelled != Py_None && !PyAnySet_Check(cancelled))) {
        PyErr_SetString(PyExc_TypeError,
                        "snapshot_events: bytes, int, int, set | None, bytes, bytes, int, bytes, tuple, int, int");
        return NULL;
    }
    if (width < 0 || columns < width || columns < 1 || PyBytes_GET_SIZE(kinds) != width ||
        PyTuple_GET_SIZE(slow) != width || piece_events < 1 || piece_bytes < 1) {
        PyErr_SetString(PyExc_ValueError, "snapshot_events: columns, width, kinds and limits do not agree");
        return NULL;
    }
    int check = cancelled != Py_None && PySet_GET_SIZE(cancelled) > 0;
    const char *buf = PyBytes_AS_STRING(data), *kind = PyBytes_AS_STRING(kinds);
    const char *hd = PyBytes_AS_STRING(head), *rf = PyBytes_AS_STRING(relf);
    Py_ssize_t n = PyBytes_GET_SIZE(data), nhead = PyBytes_GET_SIZE(head), nrel = PyBytes_GET_SIZE(relf);
    const char **starts = PyMem_Malloc(sizeof(char *) * (size_t)columns * 2);
    if (starts == NULL)
        return PyErr_NoMemory();
    const char **ends = starts + columns;
    Pieces out = {PyList_New(0), PyList_New(0), {NULL, 0, sizeof(out.piece.stack), {0}}, 0};
    out.piece.data = out.piece.stack;
    Buf row = {NULL, 0, sizeof(row.stack), {0}}, scratch = {NULL, 0, sizeof(scratch.stack), {0}};
    row.data = row.stack;
    scratch.data = scratch.stack;
    Py_ssize_t superseded = 0;
    int status = out.pieces == NULL || out.counts == NULL ? -1 : 1;
    const char *p = buf, *end = data_end(buf, n);
    while (status > 0 && n > 0) {
        const char *e = line_end(p, end);
        if (split_line(p, e, columns, starts, ends) != columns) {
            status = 0; /* not what copy_rows accepted: the Python path says what is wrong */
            break;
        }
        int skip = 0;
        if (check) {
            PyObject *key = row_key(starts, ends, width, columns, &scratch);
            skip = key == NULL ? -1 : PySet_Contains(cancelled, key);
            Py_XDECREF(key);
            if (skip < 0) {
                status = -1;
                break;
            }
        }
        if (skip) {
            superseded++;
        } else {
            row.len = 0;
            status = write_values(&row, starts, ends, width, kind, slow, &scratch);
            if (status <= 0)
                break;
            uint64_t body = (uint64_t)(nhead + 1 + varint_size(ordinal) + nrel + 1) +
                            (uint64_t)varint_size((uint64_t)row.len) + (uint64_t)row.len;
            Py_ssize_t size = 1 + varint_size(body) + (Py_ssize_t)body;
            if (out.events >= piece_events || (out.events > 0 && out.piece.len + size > piece_bytes)) {
                if (flush_piece(&out) < 0) {
                    status = -1;
                    break;
                }
            }
            if (buf_reserve(&out.piece, size) < 0) {
                status = -1;
                break;
            }
            Buf *o = &out.piece;
            o->data[o->len++] = TAG_BATCH_EVENTS;
            put_varint(o, body);
            memcpy(o->data + o->len, hd, (size_t)nhead);
            o->len += nhead;
            o->data[o->len++] = TAG_EVENT_ORDINAL;
            put_varint(o, ordinal);
            memcpy(o->data + o->len, rf, (size_t)nrel);
            o->len += nrel;
            o->data[o->len++] = TAG_EVENT_NEW;
            put_varint(o, (uint64_t)row.len);
            memcpy(o->data + o->len, row.data, (size_t)row.len);
            o->len += row.len;
            out.events++;
            ordinal++;
        }
        if (e == end)
            break;
        p = e + 1;
    }
    if (status > 0 && flush_piece(&out) < 0)
        status = -1;
    PyMem_Free((void *)starts);
    buf_free(&row);
    buf_free(&scratch);
    buf_free(&out.piece);
    PyObject *result = NULL;
    if (status > 0)
        result = Py_BuildValue("(OOn)", out.pieces, out.counts, superseded);
    else if (status == 0)
        result = Py_NewRef(Py_None);
    Py_XDECREF(out.pieces);
    Py_XDECREF(out.counts);
    return result;
}

PyMethodDef snapchunk_methods[] = {
    {"copy_rows", copy_rows, METH_VARARGS, "copy_rows(data, columns) -> rows | None: COPY text rows, checked"},
    {"snapshot_events", (PyCFunction)(void (*)(void))snapshot_events, METH_FASTCALL,
     "snapshot_events(data, columns, width, cancelled, head, relation_field, first, kinds, slow, piece_events, "
     "piece_bytes) -> (pieces, counts, superseded) | None"},
    {NULL, NULL, 0, NULL},
};
