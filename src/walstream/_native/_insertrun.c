/* A run of plain pgoutput changes of one transaction, one relation and one kind -> their framed walstream.v1
 * Events in one buffer, in one call: no Python object per row or per column (the reference, row by row, is
 * delivery/v1/adapter.Encoder._row_item with the Python decoder; events/run.py says how runs are formed).
 * A plain change is an Insert ('I', relation id, 'N', new tuple) or an Update without an old tuple ('U',
 * relation id, 'N', new tuple: the key did not change and the replica identity is not FULL); both are
 * written the same way but for the op field.
 *
 * plain_run_length(msgs, start) -> (relation id, n)
 *   msgs[start:start + n] are well-formed plain changes (what the Python decoder decodes without an error)
 *   of one relation and one kind; n is 0 when msgs[start] is not one (the caller gives it to the Python
 *   decoder, which raises its clear error or decodes what it is).
 * encode_plain_run(msgs, lsns, start, stop, op_field, txn_fields, first_ordinal, relation_field, kinds, slow)
 *   -> (data, offsets, done)
 *   data: the Batch.events fields of msgs[start:start + done], each Event with the fields _row_item writes
 *         (lsn lsns[i], ordinal first_ordinal + i - start); offsets: done + 1 uint64 offsets (native byte order) of
 *         those fields in data; done < stop - start: msgs[start + done] needs the Python path (a value that
 *         does not parse the strict way, a binary column, a column count other than len(kinds), a slow
 *         encoder that raised, a malformed message), which writes the same bytes or raises the same error.
 */
#include "_rowenc.h"

static int plain_kind(const unsigned char *s, Py_ssize_t n) {
    return n > 7 && (s[0] == 'I' || s[0] == 'U') && s[5] == 'N';
}

/* The Python decoder's checks without building anything: 1 and *relid for a well-formed plain change. */
static int scan_plain(const unsigned char *s, Py_ssize_t n, uint32_t *relid) {
    if (!plain_kind(s, n))
        return 0;
    Py_ssize_t natts = (Py_ssize_t)s[6] << 8 | s[7], pos = 8;
    for (Py_ssize_t i = 0; i < natts; i++) {
        if (pos >= n)
            return 0;
        unsigned char k = s[pos];
        if (k == 'n' || k == 'u') {
            pos++;
            continue;
        }
        if ((k != 't' && k != 'b') || pos + 5 > n)
            return 0;
        int32_t len = (int32_t)be32(s + pos + 1);
        if (len < 0 || len > n - (pos + 5))
            return 0;
        pos += 5 + len;
    }
    if (pos != n)
        return 0;
    *relid = be32(s + 1);
    return 1;
}

static PyObject *plain_run_length(PyObject *self, PyObject *args) {
    PyObject *msgs;
    Py_ssize_t start;
    if (!PyArg_ParseTuple(args, "O!n:plain_run_length", &PyList_Type, &msgs, &start))
        return NULL;
    Py_ssize_t total = PyList_GET_SIZE(msgs), i = start < 0 ? total : start;
    uint32_t first = 0, relid = 0;
    char kind = 0;
    for (; i < total; i++) {
        PyObject *msg = PyList_GET_ITEM(msgs, i);
        if (!PyBytes_Check(msg) ||
            !scan_plain((const unsigned char *)PyBytes_AS_STRING(msg), PyBytes_GET_SIZE(msg), &relid))
            break;
        if (i == start) {
            first = relid;
            kind = PyBytes_AS_STRING(msg)[0];
        } else if (relid != first || PyBytes_AS_STRING(msg)[0] != kind)
            break;
    }
    return Py_BuildValue("(kn)", (unsigned long)first, start < 0 ? (Py_ssize_t)0 : i - start);
}

/* The Row of one plain change's new tuple into b: 1 written, 0 it needs the Python path, -1 a Python error
 * is set. */
static int write_plain_row(Buf *b, const unsigned char *s, Py_ssize_t n, const char *kinds, Py_ssize_t nkinds,
                           PyObject *slow) {
    if (!plain_kind(s, n))
        return 0;
    Py_ssize_t natts = (Py_ssize_t)s[6] << 8 | s[7], pos = 8;
    if (natts != nkinds)
        return 0;
    for (Py_ssize_t i = 0; i < natts; i++) {
        if (pos >= n)
            return 0;
        unsigned char k = s[pos];
        if (k == 'n' || k == 'u') {
            if (buf_reserve(b, 4) < 0)
                return -1;
            memcpy(b->data + b->len, k == 'n' ? V_NULL : V_TOAST, 4);
            b->len += 4;
            pos++;
            continue;
        }
        if (k != 't' || pos + 5 > n) /* 'b': binary is never requested; Python raises its error */
            return 0;
        int32_t len = (int32_t)be32(s + pos + 1);
        if (len < 0 || len > n - (pos + 5))
            return 0;
        int ok = rowenc_text_value(b, (unsigned char)kinds[i], (const char *)s + pos + 5, len,
                                   PyTuple_GET_ITEM(slow, i), NULL);
        if (ok <= 0)
            return ok;
        pos += 5 + len;
    }
    return pos == n;
}

static int put_bytes(Buf *b, PyObject *bytes) {
    Py_ssize_t n = PyBytes_GET_SIZE(bytes);
    if (buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, PyBytes_AS_STRING(bytes), (size_t)n);
    b->len += n;
    return 0;
}

static int put_offset(Buf *b, uint64_t offset) {
    if (buf_reserve(b, 8) < 0)
        return -1;
    memcpy(b->data + b->len, &offset, 8); /* native order: Python reads them with memoryview.cast("Q") */
    b->len += 8;
    return 0;
}

static PyObject *encode_plain_run(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "encode_plain_run takes 10 arguments");
        return NULL;
    }
    PyObject *msgs = args[0], *lsns = args[1], *op = args[4], *txn = args[5], *relf = args[7], *kinds = args[8],
             *slow = args[9];
    if (!PyList_Check(msgs) || !PyList_Check(lsns) || !PyBytes_Check(op) || !PyBytes_Check(txn) ||
        !PyBytes_Check(relf) || !PyBytes_Check(kinds) || !PyTuple_Check(slow)) {
        PyErr_SetString(PyExc_TypeError,
                        "encode_plain_run: list, list, int, int, bytes, bytes, int, bytes, bytes, tuple");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[2]), stop = PyLong_AsSsize_t(args[3]);
    if ((start == -1 || stop == -1) && PyErr_Occurred())
        return NULL;
    uint64_t ordinal = PyLong_AsUnsignedLongLong(args[6]);
    if (ordinal == (uint64_t)-1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t nkinds = PyBytes_GET_SIZE(kinds);
    if (start < 0 || stop > PyList_GET_SIZE(msgs) || stop > PyList_GET_SIZE(lsns) || PyTuple_GET_SIZE(slow) != nkinds) {
        PyErr_SetString(PyExc_ValueError, "encode_plain_run: start/stop out of range, or len(slow) != len(kinds)");
        return NULL;
    }
    uint64_t fixed = (uint64_t)(PyBytes_GET_SIZE(op) + PyBytes_GET_SIZE(txn) + PyBytes_GET_SIZE(relf));
    Buf out = {NULL, 0, sizeof(out.stack), {0}}, row = {NULL, 0, sizeof(row.stack), {0}},
        offsets = {NULL, 0, sizeof(offsets.stack), {0}};
    out.data = out.stack;
    row.data = row.stack;
    offsets.data = offsets.stack;
    PyObject *result = NULL;
    Py_ssize_t i = start;
    if (put_offset(&offsets, 0) < 0)
        goto done;
    char kind = 0; /* every row is written with op_field: one kind of change only */
    for (; i < stop; i++, ordinal++) {
        PyObject *msg = PyList_GET_ITEM(msgs, i);
        if (!PyBytes_Check(msg) || PyBytes_GET_SIZE(msg) == 0)
            break;
        if (i == start)
            kind = PyBytes_AS_STRING(msg)[0];
        else if (PyBytes_AS_STRING(msg)[0] != kind)
            break;
        uint64_t lsn = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(lsns, i));
        if (lsn == (uint64_t)-1 && PyErr_Occurred())
            goto done;
        row.len = 0;
        int ok = write_plain_row(&row, (const unsigned char *)PyBytes_AS_STRING(msg), PyBytes_GET_SIZE(msg),
                                  PyBytes_AS_STRING(kinds), nkinds, slow);
        if (ok < 0)
            goto done;
        if (ok == 0)
            break;
        /* The Event's fields in field order, defaults left out (adapter.Encoder._row_item). */
        uint64_t body = fixed + (lsn ? 1 + (uint64_t)varint_size(lsn) : 0) +
                        (ordinal ? 1 + (uint64_t)varint_size(ordinal) : 0) + 1 +
                        (uint64_t)varint_size((uint64_t)row.len) + (uint64_t)row.len;
        if (buf_reserve(&out, 1 + 10 + 1 + 10 + 1 + 10) < 0)
            goto done;
        out.data[out.len++] = TAG_BATCH_EVENTS;
        put_varint(&out, body);
        if (put_bytes(&out, op) < 0 || buf_reserve(&out, 11) < 0)
            goto done;
        if (lsn) {
            out.data[out.len++] = TAG_EVENT_LSN;
            put_varint(&out, lsn);
        }
        if (put_bytes(&out, txn) < 0 || buf_reserve(&out, 11) < 0)
            goto done;
        if (ordinal) {
            out.data[out.len++] = TAG_EVENT_ORDINAL;
            put_varint(&out, ordinal);
        }
        if (put_bytes(&out, relf) < 0 || buf_reserve(&out, 11 + row.len) < 0)
            goto done;
        out.data[out.len++] = TAG_EVENT_NEW;
        put_varint(&out, (uint64_t)row.len);
        memcpy(out.data + out.len, row.data, (size_t)row.len);
        out.len += row.len;
        if (put_offset(&offsets, (uint64_t)out.len) < 0)
            goto done;
    }
    result = Py_BuildValue("(y#y#n)", out.data, out.len, offsets.data, offsets.len, i - start);
done:
    buf_free(&out);
    buf_free(&row);
    buf_free(&offsets);
    return result;
}

PyMethodDef insertrun_methods[] = {
    {"plain_run_length", plain_run_length, METH_VARARGS,
     "plain_run_length(msgs, start) -> (relation id, n well-formed plain changes of it and of one kind from start)"},
    {"encode_plain_run", (PyCFunction)(void (*)(void))encode_plain_run, METH_FASTCALL,
     "encode_plain_run(msgs, lsns, start, stop, op_field, txn_fields, first_ordinal, relation_field, kinds, slow)"
     " -> (framed events, uint64 offsets, rows done)"},
    {NULL, NULL, 0, NULL},
};
