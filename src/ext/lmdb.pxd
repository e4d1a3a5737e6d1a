# The part of liblmdb's C API the native engine calls (lmdb.h, 0.9.x), and no more.

cdef extern from "lmdb.h" nogil:
    ctypedef struct MDB_env:
        pass
    ctypedef struct MDB_txn:
        pass
    ctypedef struct MDB_cursor:
        pass
    ctypedef unsigned int MDB_dbi

    ctypedef struct MDB_val:
        size_t mv_size
        void *mv_data

    ctypedef int MDB_cmp_func(const MDB_val *a, const MDB_val *b) noexcept

    ctypedef struct MDB_stat:  # the fields read
        unsigned int ms_psize
        size_t ms_leaf_pages

    ctypedef enum MDB_cursor_op:
        MDB_FIRST
        MDB_LAST
        MDB_NEXT
        MDB_SET_KEY

    enum:
        MDB_NOTFOUND
        MDB_MAP_RESIZED
        MDB_BAD_RSLOT
        MDB_RDONLY
        MDB_NOTLS
        MDB_NORDAHEAD

    int mdb_env_create(MDB_env **env)
    int mdb_env_open(MDB_env *env, const char *path, unsigned int flags, unsigned int mode)
    void mdb_env_close(MDB_env *env)
    int mdb_env_set_mapsize(MDB_env *env, size_t size)
    int mdb_env_set_maxreaders(MDB_env *env, unsigned int readers)
    int mdb_env_set_maxdbs(MDB_env *env, MDB_dbi dbs)

    int mdb_txn_begin(MDB_env *env, MDB_txn *parent, unsigned int flags, MDB_txn **txn)
    int mdb_txn_commit(MDB_txn *txn)
    void mdb_txn_abort(MDB_txn *txn)
    void mdb_txn_reset(MDB_txn *txn)
    int mdb_txn_renew(MDB_txn *txn)

    int mdb_dbi_open(MDB_txn *txn, const char *name, unsigned int flags, MDB_dbi *dbi)
    int mdb_stat(MDB_txn *txn, MDB_dbi dbi, MDB_stat *stat)
    int mdb_set_compare(MDB_txn *txn, MDB_dbi dbi, MDB_cmp_func *cmp)
    int mdb_get(MDB_txn *txn, MDB_dbi dbi, MDB_val *key, MDB_val *data)

    int mdb_cursor_open(MDB_txn *txn, MDB_dbi dbi, MDB_cursor **cursor)
    void mdb_cursor_close(MDB_cursor *cursor)
    int mdb_cursor_renew(MDB_txn *txn, MDB_cursor *cursor)
    int mdb_cursor_get(MDB_cursor *cursor, MDB_val *key, MDB_val *data, MDB_cursor_op op)

    char *mdb_strerror(int err)
