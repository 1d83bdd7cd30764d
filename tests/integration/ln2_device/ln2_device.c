/*
 * ln2_device: a NETCONF device that calls home, built on libnetconf2's server
 * and call-home API (Debian's libnetconf2 2.0.x with libyang 2.1), for the
 * callhome integration tests and benchmarks.
 *
 * It behaves as libnetconf2 does natively (netopeer2 and products built on
 * libnetconf2 use the same call-home thread): nc_connect_ch_client_dispatch()
 * dials the manager, runs SSH (libssh) or TLS (OpenSSL) as the *server*, and
 * hands each established session to this program, which polls every session
 * in one nc_pollsession.  Further NETCONF sessions on the same SSH connection
 * (new "netconf" channels) are accepted with nc_ps_accept_ssh_channel().
 *
 * Datastores: running and candidate are in-memory libyang trees of the
 * modules loaded from --yang-dir (ietf-netconf-acm by default, so the NACM
 * configuration is editable).  Operations: get, get-config, edit-config
 * (merge / replace / create / delete / remove / none; default-operation),
 * commit (validates), discard-changes, validate, lock, unlock; close-session
 * and get-schema are libnetconf2's own.  Filters: xpath, and subtree filters
 * made of containment, selection and content-match nodes.
 *
 * Every line this program logs goes to stderr, prefixed with seconds since
 * start.  Lines the tests rely on:
 *   "call-home session N established as user U (C so far)"
 *                        a connection's first NETCONF session (hello done)
 *   "session N opened on an existing connection"     further SSH channels
 *   "session N ended"
 *   "libnetconf2 VRB: Successfully connected to ..."  each TCP connection it dials
 *   "libnetconf2 ERR: ..."                            libnetconf2's own errors
 *
 * Usage: see usage() below.  SIGTERM/SIGINT end it; --lifetime bounds it.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libyang/libyang.h>
#include <nc_server.h>

#define CH_CLIENT "manager"
#define CH_ENDPT "manager-endpoint"
#define HOSTKEY_NAME "hostkey"
#define CERT_NAME "device-cert"
#define TRUSTED_LIST_NAME "manager-ca"
#define MAX_HOSTKEYS 4
#define POLL_TIMEOUT_MS 100

static struct {
    const char *ch_host;
    uint16_t ch_port;
    int tls;
    const char *yang_dir;
    const char *modules[8];
    int module_count;
    const char *username;
    const char *password;
    const char *authorized_key;
    const char *hostkeys[MAX_HOSTKEYS];
    int hostkey_count;
    const char *cert, *key, *chain, *client_ca, *client_fingerprint;
    int hello_timeout;
    int lifetime;
    int verbose;
} opts = {.ch_host = "127.0.0.1", .hello_timeout = 60, .lifetime = 900};

static struct timespec started;
static volatile sig_atomic_t stopping;
static struct ly_ctx *ctx;
static struct nc_pollsession *ps;
static struct lyd_node *running, *candidate;
static uint32_t running_lock, candidate_lock; /* session id holding the lock, 0: none */
static int candidate_modified;
static unsigned established; /* call-home connections that reached a NETCONF session */

static void
say(const char *format, ...)
{
    struct timespec now;
    va_list ap;

    clock_gettime(CLOCK_MONOTONIC, &now);
    fprintf(stderr, "[%9.3f] ", (now.tv_sec - started.tv_sec) + (now.tv_nsec - started.tv_nsec) / 1e9);
    va_start(ap, format);
    vfprintf(stderr, format, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}

static void
ln2_log(const struct nc_session *session, NC_VERB_LEVEL level, const char *msg)
{
    static const char *names[] = {"ERR", "WRN", "VRB", "DBG", "DBL"};

    if (session) {
        say("libnetconf2 %s: session %u: %s", names[level], nc_session_get_id(session), msg);
    } else {
        say("libnetconf2 %s: %s", names[level], msg);
    }
}

static void
on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

/* ---- credentials and keys (libnetconf2 asks through callbacks) ---------- */

static int
password_clb(const struct nc_session *session, const char *password, void *user_data)
{
    (void)user_data;
    /* 0 means authenticated */
    return !(opts.password && !strcmp(nc_session_get_username(session), opts.username) &&
             !strcmp(password, opts.password));
}

static int
hostkey_clb(const char *name, void *user_data, char **privkey_path, char **privkey_data, NC_SSH_KEY_TYPE *privkey_type)
{
    int index;

    (void)user_data;
    (void)privkey_type;
    *privkey_data = NULL;
    /* names are HOSTKEY_NAME followed by the index */
    index = atoi(name + strlen(HOSTKEY_NAME));
    if ((index < 0) || (index >= opts.hostkey_count)) {
        return 1;
    }
    *privkey_path = strdup(opts.hostkeys[index]);
    return 0;
}

static int
cert_clb(const char *name, void *user_data, char **cert_path, char **cert_data, char **privkey_path,
        char **privkey_data, NC_SSH_KEY_TYPE *privkey_type)
{
    (void)name;
    (void)user_data;
    (void)privkey_type;
    *cert_data = *privkey_data = NULL;
    *cert_path = strdup(opts.cert);
    *privkey_path = strdup(opts.key);
    return 0;
}

/* a certificate list for libnetconf2: the one file at path, or none (freed by libnetconf2) */
static int
path_list(const char *path, char ***cert_paths, int *cert_path_count, char ***cert_data, int *cert_data_count)
{
    *cert_data = NULL;
    *cert_data_count = 0;
    *cert_paths = NULL;
    *cert_path_count = 0;
    if (path) {
        *cert_paths = malloc(sizeof **cert_paths);
        (*cert_paths)[0] = strdup(path);
        *cert_path_count = 1;
    }
    return 0;
}

/* the intermediates sent after the device certificate */
static int
cert_chain_clb(const char *name, void *user_data, char ***cert_paths, int *cert_path_count, char ***cert_data,
        int *cert_data_count)
{
    (void)name;
    (void)user_data;
    return path_list(opts.chain, cert_paths, cert_path_count, cert_data, cert_data_count);
}

/* the CA the manager's client certificate must chain to (libnetconf2 2.0
 * fails every TLS handshake when this callback is not set, list or no list) */
static int
trusted_cert_list_clb(const char *name, void *user_data, char ***cert_paths, int *cert_path_count, char ***cert_data,
        int *cert_data_count)
{
    (void)name;
    (void)user_data;
    return path_list(opts.client_ca, cert_paths, cert_path_count, cert_data, cert_data_count);
}

/* ---- the call-home thread hands us each new connection's first session -- */

static int
ch_session_clb(const char *client_name, struct nc_session *session)
{
    (void)client_name;
    if (nc_ps_add_session(ps, session)) {
        say("cannot poll call-home session %u", nc_session_get_id(session));
        return 1;
    }
    ++established;
    say("call-home session %u established as user %s (%u so far)", nc_session_get_id(session),
            nc_session_get_username(session), established);
    return 0;
}

/* ---- datastores --------------------------------------------------------- */

static struct nc_server_reply *
reply_error(NC_ERR tag, NC_ERR_TYPE type, const char *message)
{
    struct lyd_node *err = nc_err(ctx, tag, type);

    if (message) {
        nc_err_set_msg(err, message, "en");
    }
    return nc_server_reply_err(err);
}

static struct nc_server_reply *
reply_libyang_error(NC_ERR tag)
{
    return reply_error(tag, NC_ERR_TYPE_APP, ly_errmsg(ctx));
}

/* which datastore a <source>/<target> child names: "running", "candidate", ... */
static const char *
datastore_name(const struct lyd_node *rpc, const char *which)
{
    struct lyd_node *node = NULL;

    if (lyd_find_path(rpc, which, 0, &node) || !lyd_child(node)) {
        return NULL;
    }
    return LYD_NAME(lyd_child(node));
}

static struct lyd_node **
datastore(const char *name)
{
    if (name && !strcmp(name, "running")) {
        return &running;
    }
    if (name && !strcmp(name, "candidate")) {
        return &candidate;
    }
    return NULL;
}

static uint32_t *
lock_of(const char *name)
{
    if (name && !strcmp(name, "running")) {
        return &running_lock;
    }
    if (name && !strcmp(name, "candidate")) {
        return &candidate_lock;
    }
    return NULL;
}

static int
locked_by_other(const char *name, const struct nc_session *session)
{
    uint32_t *lock = lock_of(name);

    return lock && *lock && (*lock != nc_session_get_id(session));
}

/* ---- filters ------------------------------------------------------------ */

static const char *
node_ns(const struct lyd_node *node)
{
    return node->schema ? node->schema->module->ns : ((const struct lyd_node_opaq *)node)->name.module_ns;
}

static const char *
node_value(const struct lyd_node *node)
{
    if (!node->schema) {
        return ((const struct lyd_node_opaq *)node)->value;
    }
    return (node->schema->nodetype & LYD_NODE_TERM) ? lyd_get_value(node) : NULL;
}

static int
blank(const char *text)
{
    for (; text && *text; ++text) {
        if (!strchr(" \t\r\n", *text)) {
            return 0;
        }
    }
    return 1;
}

static int
select_into(struct lyd_node **result, const struct lyd_node *ds, const char *xpath)
{
    struct ly_set *set = NULL;
    struct lyd_node *dup;
    uint32_t i;
    int ret = 0;

    if (!ds) {
        return 0;
    }
    if (lyd_find_xpath(ds, xpath, &set)) {
        return -1;
    }
    for (i = 0; i < set->count; ++i) {
        if (lyd_dup_single(set->dnodes[i], NULL, LYD_DUP_RECURSIVE | LYD_DUP_WITH_PARENTS, &dup)) {
            ret = -1;
            break;
        }
        while (lyd_parent(dup)) {
            dup = lyd_parent(dup);
        }
        if (lyd_merge_siblings(result, dup, LYD_MERGE_DESTRUCT)) {
            ret = -1;
            break;
        }
    }
    ly_set_free(set, NULL);
    return ret;
}

/* RFC 6241 s6: containment and selection nodes become path steps, content
 * match nodes become predicates; each selection branch is one XPath */
static int
subtree_select(struct lyd_node **result, const struct lyd_node *ds, const struct lyd_node *filter, const char *prefix)
{
    const struct lyd_node *child;
    const struct lys_module *mod;
    char *step = NULL, *with_pred;
    const char *value;
    int branches = 0, ret = 0;

    mod = ly_ctx_get_module_implemented_ns(ctx, node_ns(filter));
    if (!mod) {
        return 0; /* no such module here: selects nothing */
    }
    if (asprintf(&step, "%s/%s:%s", prefix, mod->name, LYD_NAME(filter)) < 0) {
        return -1;
    }
    LY_LIST_FOR(lyd_child(filter), child) {
        value = node_value(child);
        if (!lyd_child(child) && !blank(value)) {
            const struct lys_module *cmod = ly_ctx_get_module_implemented_ns(ctx, node_ns(child));
            char quote = strchr(value, '\'') ? '"' : '\'';

            if (!cmod || (asprintf(&with_pred, "%s[%s:%s=%c%s%c]", step, cmod->name, LYD_NAME(child), quote, value,
                    quote) < 0)) {
                free(step);
                return cmod ? -1 : 0;
            }
            free(step);
            step = with_pred;
        }
    }
    LY_LIST_FOR(lyd_child(filter), child) {
        if (lyd_child(child) || blank(node_value(child))) {
            ++branches;
            if ((ret = subtree_select(result, ds, child, step))) {
                break;
            }
        }
    }
    if (!branches && !ret) {
        ret = select_into(result, ds, step);
    }
    free(step);
    return ret;
}

static int
filtered(const struct lyd_node *rpc, const struct lyd_node *ds, struct lyd_node **result)
{
    struct lyd_node *filter = NULL, *top;
    struct lyd_meta *type, *select;
    const struct lys_module *nc = ly_ctx_get_module_implemented(ctx, "ietf-netconf");
    const struct lyd_node_any *any;

    *result = NULL;
    if (lyd_find_path(rpc, "filter", 0, &filter)) {
        return ds ? lyd_dup_siblings(ds, NULL, LYD_DUP_RECURSIVE, result) : 0;
    }
    type = lyd_find_meta(filter->meta, nc, "type");
    if (type && !strcmp(lyd_get_meta_value(type), "xpath")) {
        select = lyd_find_meta(filter->meta, nc, "select");
        return select ? select_into(result, ds, lyd_get_meta_value(select)) : -1;
    }
    any = (const struct lyd_node_any *)filter;
    if (any->value_type != LYD_ANYDATA_DATATREE) {
        return -1;
    }
    LY_LIST_FOR(any->value.tree, top) {
        if (subtree_select(result, ds, top, "")) {
            return -1;
        }
    }
    return 0;
}

static struct nc_server_reply *
op_get(struct lyd_node *rpc, struct lyd_node *ds)
{
    struct lyd_node *reply, *data;

    if (filtered(rpc, ds, &data)) {
        lyd_free_siblings(data);
        return reply_error(NC_ERR_INVALID_VALUE, NC_ERR_TYPE_PROT, "unusable filter");
    }
    if (lyd_dup_single(rpc, NULL, 0, &reply) ||
            lyd_new_any(reply, NULL, "data", data, 1, LYD_ANYDATA_DATATREE, 1, NULL)) {
        lyd_free_siblings(data);
        return reply_libyang_error(NC_ERR_OP_FAILED);
    }
    return nc_server_reply_data(reply, NC_WD_EXPLICIT, NC_PARAMTYPE_FREE);
}

/* ---- edit-config (RFC 6241 s7.2) ---------------------------------------- */

enum edit_op { OP_MERGE, OP_REPLACE, OP_CREATE, OP_DELETE, OP_REMOVE, OP_NONE };

static enum edit_op
op_of(const struct lyd_node *edit, enum edit_op inherited)
{
    static const char *names[] = {"merge", "replace", "create", "delete", "remove", "none"};
    const struct lys_module *nc = ly_ctx_get_module_implemented(ctx, "ietf-netconf");
    struct lyd_meta *meta = lyd_find_meta(edit->meta, nc, "operation");
    int i;

    if (!meta) {
        return inherited;
    }
    for (i = 0; i < 6; ++i) {
        if (!strcmp(lyd_get_meta_value(meta), names[i])) {
            return (enum edit_op)i;
        }
    }
    return inherited;
}

/* insert a copy of edit (no metadata) under parent, or among the top-level siblings */
static int
insert_copy(const struct lyd_node *edit, struct lyd_node *parent, struct lyd_node **top)
{
    struct lyd_node *dup;

    if (lyd_dup_single(edit, (struct lyd_node_inner *)parent, LYD_DUP_RECURSIVE | LYD_DUP_NO_META, &dup)) {
        return -1;
    }
    return parent ? 0 : (int)lyd_insert_sibling(*top, dup, top);
}

static void
remove_node(struct lyd_node *node, struct lyd_node **top)
{
    if (node == *top) {
        *top = node->next;
    }
    lyd_free_tree(node);
}

/* apply the siblings of edit to the children of parent (parent NULL: to *top) */
static struct nc_server_reply *
apply_edit(const struct lyd_node *edits, struct lyd_node *parent, struct lyd_node **top, enum edit_op inherited)
{
    const struct lyd_node *edit;
    struct lyd_node *match, *siblings;
    struct nc_server_reply *err;
    enum edit_op op;
    LY_ERR ly_rc;

    LY_LIST_FOR(edits, edit) {
        op = op_of(edit, inherited);
        siblings = parent ? lyd_child(parent) : *top;
        match = NULL;
        if (siblings) {
            lyd_find_sibling_first(siblings, edit, &match);
        }
        switch (op) {
        case OP_CREATE:
            if (match) {
                return reply_error(NC_ERR_DATA_EXISTS, NC_ERR_TYPE_APP, "the data to create already exist");
            }
            if (insert_copy(edit, parent, top)) {
                return reply_libyang_error(NC_ERR_OP_FAILED);
            }
            break;
        case OP_DELETE:
        case OP_REMOVE:
            if (!match && (op == OP_DELETE)) {
                return reply_error(NC_ERR_DATA_MISSING, NC_ERR_TYPE_APP, "the data to delete do not exist");
            }
            if (match) {
                remove_node(match, top);
            }
            break;
        case OP_REPLACE:
            if (match) {
                remove_node(match, top);
            }
            if (insert_copy(edit, parent, top)) {
                return reply_libyang_error(NC_ERR_OP_FAILED);
            }
            break;
        case OP_MERGE:
        case OP_NONE:
            if (!match) {
                if (op == OP_NONE) {
                    /* only a path to deeper operations: create the node, then descend */
                    if (lyd_dup_single(edit, (struct lyd_node_inner *)parent, LYD_DUP_NO_META, &match) ||
                            (!parent && lyd_insert_sibling(*top, match, top))) {
                        return reply_libyang_error(NC_ERR_OP_FAILED);
                    }
                } else {
                    if (insert_copy(edit, parent, top)) {
                        return reply_libyang_error(NC_ERR_OP_FAILED);
                    }
                    break;
                }
            }
            if (edit->schema->nodetype & LYD_NODE_TERM) {
                /* LY_EEXIST, LY_ENOT: the same value (always so for list keys and leaf-list entries) */
                ly_rc = (op == OP_MERGE) ? lyd_change_term(match, lyd_get_value(edit)) : LY_SUCCESS;
                if ((ly_rc != LY_SUCCESS) && (ly_rc != LY_EEXIST) && (ly_rc != LY_ENOT)) {
                    return reply_libyang_error(NC_ERR_INVALID_VALUE);
                }
            } else if ((err = apply_edit(lyd_child(edit), match, top, op))) {
                return err;
            }
            break;
        }
    }
    return NULL;
}

static struct nc_server_reply *
op_edit(struct lyd_node *rpc, struct nc_session *session)
{
    const char *target = datastore_name(rpc, "target");
    struct lyd_node **ds = datastore(target), *config = NULL, *node = NULL, *edit = NULL, *work = NULL;
    struct nc_server_reply *err;
    enum edit_op default_op = OP_MERGE;
    char *xml = NULL;

    if (!ds) {
        return reply_error(NC_ERR_OP_NOT_SUPPORTED, NC_ERR_TYPE_PROT, "edit-config targets running or candidate");
    }
    if (locked_by_other(target, session)) {
        return reply_error(NC_ERR_IN_USE, NC_ERR_TYPE_PROT, "the target datastore is locked by another session");
    }
    if (!lyd_find_path(rpc, "default-operation", 0, &node)) {
        default_op = !strcmp(lyd_get_value(node), "replace") ? OP_REPLACE :
                !strcmp(lyd_get_value(node), "none") ? OP_NONE : OP_MERGE;
    }
    if (lyd_find_path(rpc, "config", 0, &config)) {
        return reply_error(NC_ERR_OP_NOT_SUPPORTED, NC_ERR_TYPE_PROT, "only <config> edits (no <url>)");
    }
    /* the <config> anyxml holds opaque nodes: parse them against the schema */
    if (lyd_any_value_str(config, &xml) ||
            (xml && lyd_parse_data_mem(ctx, xml, LYD_XML, LYD_PARSE_ONLY | LYD_PARSE_STRICT, 0, &edit))) {
        free(xml);
        return reply_libyang_error(NC_ERR_INVALID_VALUE);
    }
    free(xml);
    if (default_op == OP_REPLACE) {
        work = NULL; /* replace: the edit is the new content */
    } else if (*ds && lyd_dup_siblings(*ds, NULL, LYD_DUP_RECURSIVE, &work)) {
        lyd_free_siblings(edit);
        return reply_libyang_error(NC_ERR_OP_FAILED);
    }
    err = apply_edit(edit, NULL, &work, default_op == OP_REPLACE ? OP_MERGE : default_op);
    lyd_free_siblings(edit);
    if (!err && (ds == &running) && lyd_validate_all(&work, ctx, LYD_VALIDATE_NO_STATE, NULL)) {
        err = reply_libyang_error(NC_ERR_INVALID_VALUE);
    }
    if (err) {
        lyd_free_siblings(work);
        return err;
    }
    lyd_free_siblings(*ds);
    *ds = work;
    if (ds == &candidate) {
        candidate_modified = 1;
    }
    say("session %u: edit-config on %s", nc_session_get_id(session), target);
    return nc_server_reply_ok();
}

static struct nc_server_reply *
op_commit(struct nc_session *session)
{
    struct lyd_node *next = NULL;

    if (locked_by_other("running", session)) {
        return reply_error(NC_ERR_IN_USE, NC_ERR_TYPE_PROT, "running is locked by another session");
    }
    if ((candidate && lyd_dup_siblings(candidate, NULL, LYD_DUP_RECURSIVE, &next)) ||
            lyd_validate_all(&next, ctx, LYD_VALIDATE_NO_STATE, NULL)) {
        lyd_free_siblings(next);
        return reply_libyang_error(NC_ERR_OP_FAILED);
    }
    lyd_free_siblings(running);
    running = next;
    candidate_modified = 0;
    say("session %u: commit", nc_session_get_id(session));
    return nc_server_reply_ok();
}

static struct nc_server_reply *
copy_datastore(struct lyd_node **to, struct lyd_node *from)
{
    struct lyd_node *copy = NULL;

    if (from && lyd_dup_siblings(from, NULL, LYD_DUP_RECURSIVE, &copy)) {
        return reply_libyang_error(NC_ERR_OP_FAILED);
    }
    lyd_free_siblings(*to);
    *to = copy;
    return nc_server_reply_ok();
}

static struct nc_server_reply *
op_lock(struct lyd_node *rpc, struct nc_session *session, int lock)
{
    const char *target = datastore_name(rpc, "target");
    uint32_t *holder = lock_of(target);
    uint32_t id = nc_session_get_id(session);
    struct lyd_node *err;

    if (!holder) {
        return reply_error(NC_ERR_OP_NOT_SUPPORTED, NC_ERR_TYPE_PROT, "running or candidate");
    }
    if (lock) {
        if (*holder) {
            err = nc_err(ctx, NC_ERR_LOCK_DENIED, *holder);
            return nc_server_reply_err(err);
        }
        if ((holder == &candidate_lock) && candidate_modified) {
            return reply_error(NC_ERR_LOCK_DENIED, NC_ERR_TYPE_PROT, "the candidate has uncommitted changes");
        }
        *holder = id;
    } else {
        if (*holder != id) {
            return reply_error(NC_ERR_OP_FAILED, NC_ERR_TYPE_PROT, "this session does not hold the lock");
        }
        *holder = 0;
    }
    return nc_server_reply_ok();
}

static struct nc_server_reply *
rpc_clb(struct lyd_node *rpc, struct nc_session *session)
{
    const char *name = LYD_NAME(rpc);
    struct lyd_node *check = NULL;

    if (opts.verbose) {
        say("session %u: rpc %s", nc_session_get_id(session), name);
    }
    if (strcmp(rpc->schema->module->name, "ietf-netconf")) {
        return reply_error(NC_ERR_OP_NOT_SUPPORTED, NC_ERR_TYPE_PROT, NULL);
    }
    if (!strcmp(name, "get")) {
        return op_get(rpc, running);
    } else if (!strcmp(name, "get-config")) {
        struct lyd_node **ds = datastore(datastore_name(rpc, "source"));

        return ds ? op_get(rpc, *ds) : reply_error(NC_ERR_OP_NOT_SUPPORTED, NC_ERR_TYPE_PROT, "running or candidate");
    } else if (!strcmp(name, "edit-config")) {
        return op_edit(rpc, session);
    } else if (!strcmp(name, "commit")) {
        return op_commit(session);
    } else if (!strcmp(name, "discard-changes")) {
        candidate_modified = 0;
        return copy_datastore(&candidate, running);
    } else if (!strcmp(name, "validate")) {
        struct lyd_node **ds = datastore(datastore_name(rpc, "source"));

        if (!ds) {
            return reply_error(NC_ERR_OP_NOT_SUPPORTED, NC_ERR_TYPE_PROT, "running or candidate");
        }
        if ((*ds && lyd_dup_siblings(*ds, NULL, LYD_DUP_RECURSIVE, &check)) ||
                lyd_validate_all(&check, ctx, LYD_VALIDATE_NO_STATE, NULL)) {
            lyd_free_siblings(check);
            return reply_libyang_error(NC_ERR_INVALID_VALUE);
        }
        lyd_free_siblings(check);
        return nc_server_reply_ok();
    } else if (!strcmp(name, "lock") || !strcmp(name, "unlock")) {
        return op_lock(rpc, session, !strcmp(name, "lock"));
    }
    return reply_error(NC_ERR_OP_NOT_SUPPORTED, NC_ERR_TYPE_PROT, NULL);
}

static void
session_ended(struct nc_session *session)
{
    uint32_t id = nc_session_get_id(session);

    if (running_lock == id) {
        running_lock = 0;
    }
    if (candidate_lock == id) {
        candidate_lock = 0;
    }
    say("session %u ended", id);
}

/* ---- setup -------------------------------------------------------------- */

static void
usage(void)
{
    fprintf(stderr,
            "usage: ln2_device --ch-port PORT [--ch-host ADDR] --yang-dir DIR [--module NAME]...\n"
            "  SSH: --hostkey PRIVATE_KEY... --username U (--password-env VAR | --authorized-key PUB)\n"
            "  TLS: --tls --cert PEM --key PEM [--chain PEM] --client-ca PEM --client-fingerprint 04:AA:..\n"
            "       --username U (the user the client certificate maps to)\n"
            "  [--hello-timeout S] [--lifetime S] [--verbose]\n");
}

static int
parse_args(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"ch-host", required_argument, NULL, 'H'}, {"ch-port", required_argument, NULL, 'P'},
        {"tls", no_argument, NULL, 't'}, {"yang-dir", required_argument, NULL, 'y'},
        {"module", required_argument, NULL, 'm'}, {"username", required_argument, NULL, 'u'},
        {"password-env", required_argument, NULL, 'p'}, {"authorized-key", required_argument, NULL, 'a'},
        {"hostkey", required_argument, NULL, 'k'}, {"cert", required_argument, NULL, 'c'},
        {"key", required_argument, NULL, 'K'}, {"chain", required_argument, NULL, 'C'},
        {"client-ca", required_argument, NULL, 'A'}, {"client-fingerprint", required_argument, NULL, 'f'},
        {"hello-timeout", required_argument, NULL, 'h'}, {"lifetime", required_argument, NULL, 'l'},
        {"verbose", no_argument, NULL, 'v'}, {NULL, 0, NULL, 0}
    };
    int c;

    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'H': opts.ch_host = optarg; break;
        case 'P': opts.ch_port = (uint16_t)atoi(optarg); break;
        case 't': opts.tls = 1; break;
        case 'y': opts.yang_dir = optarg; break;
        case 'm':
            if (opts.module_count == 8) {
                return -1;
            }
            opts.modules[opts.module_count++] = optarg;
            break;
        case 'u': opts.username = optarg; break;
        case 'p':
            /* from the environment, not argv: ps(1) shows argv to every user */
            opts.password = getenv(optarg);
            if (!opts.password) {
                fprintf(stderr, "environment variable %s is not set\n", optarg);
                return -1;
            }
            break;
        case 'a': opts.authorized_key = optarg; break;
        case 'k':
            if (opts.hostkey_count == MAX_HOSTKEYS) {
                return -1;
            }
            opts.hostkeys[opts.hostkey_count++] = optarg;
            break;
        case 'c': opts.cert = optarg; break;
        case 'K': opts.key = optarg; break;
        case 'C': opts.chain = optarg; break;
        case 'A': opts.client_ca = optarg; break;
        case 'f': opts.client_fingerprint = optarg; break;
        case 'h': opts.hello_timeout = atoi(optarg); break;
        case 'l': opts.lifetime = atoi(optarg); break;
        case 'v': opts.verbose = 1; break;
        default: return -1;
        }
    }
    if (!opts.ch_port || !opts.yang_dir || !opts.username) {
        return -1;
    }
    if (opts.tls) {
        return (opts.cert && opts.key && opts.client_ca && opts.client_fingerprint) ? 0 : -1;
    }
    return (opts.hostkey_count && (opts.password || opts.authorized_key)) ? 0 : -1;
}

static int
load_schema(void)
{
    /* RFC 6241 capabilities follow from these features (nc_server_get_cpblts) */
    const char *nc_features[] = {"writable-running", "candidate", "validate", "xpath", NULL};
    int i;

    if (ly_ctx_new(opts.yang_dir, LY_CTX_DISABLE_SEARCHDIR_CWD, &ctx)) {
        say("cannot create a libyang context on %s", opts.yang_dir);
        return -1;
    }
    if (!ly_ctx_load_module(ctx, "ietf-netconf", NULL, nc_features)) {
        say("cannot load ietf-netconf from %s: %s", opts.yang_dir, ly_errmsg(ctx));
        return -1;
    }
    if (!opts.module_count) {
        opts.modules[opts.module_count++] = "ietf-netconf-acm";
    }
    for (i = 0; i < opts.module_count; ++i) {
        if (!ly_ctx_load_module(ctx, opts.modules[i], NULL, NULL)) {
            say("cannot load %s from %s: %s", opts.modules[i], opts.yang_dir, ly_errmsg(ctx));
            return -1;
        }
    }
    /* optional: <get-schema> (libnetconf2 answers it itself when present) */
    ly_ctx_load_module(ctx, "ietf-netconf-monitoring", NULL, NULL);
    return 0;
}

static int
setup_call_home(void)
{
    char name[32];
    int i;

    if (nc_server_ch_add_client(CH_CLIENT) ||
            nc_server_ch_client_add_endpt(CH_CLIENT, CH_ENDPT, opts.tls ? NC_TI_OPENSSL : NC_TI_LIBSSH) ||
            nc_server_ch_client_endpt_set_address(CH_CLIENT, CH_ENDPT, opts.ch_host) ||
            nc_server_ch_client_endpt_set_port(CH_CLIENT, CH_ENDPT, opts.ch_port) ||
            nc_server_ch_client_set_conn_type(CH_CLIENT, NC_CH_PERSIST)) {
        return -1;
    }
    if (opts.tls) {
        nc_server_tls_set_server_cert_clb(cert_clb, NULL, NULL);
        nc_server_tls_set_server_cert_chain_clb(cert_chain_clb, NULL, NULL);
        nc_server_tls_set_trusted_cert_list_clb(trusted_cert_list_clb, NULL, NULL);
        if (nc_server_tls_ch_client_endpt_set_server_cert(CH_CLIENT, CH_ENDPT, CERT_NAME) ||
                nc_server_tls_ch_client_endpt_add_trusted_cert_list(CH_CLIENT, CH_ENDPT, TRUSTED_LIST_NAME) ||
                nc_server_tls_ch_client_endpt_add_ctn(CH_CLIENT, CH_ENDPT, 1, opts.client_fingerprint,
                NC_TLS_CTN_SPECIFIED, opts.username)) {
            return -1;
        }
    } else {
        nc_server_ssh_set_hostkey_clb(hostkey_clb, NULL, NULL);
        nc_server_ssh_set_passwd_auth_clb(password_clb, NULL, NULL);
        for (i = 0; i < opts.hostkey_count; ++i) {
            snprintf(name, sizeof name, "%s%d", HOSTKEY_NAME, i);
            if (nc_server_ssh_ch_client_endpt_add_hostkey(CH_CLIENT, CH_ENDPT, name, -1)) {
                return -1;
            }
        }
        if (opts.authorized_key && nc_server_ssh_add_authkey_path(opts.authorized_key, opts.username)) {
            return -1;
        }
        if (nc_server_ssh_ch_client_endpt_set_auth_methods(CH_CLIENT, CH_ENDPT,
                (opts.password ? NC_SSH_AUTH_PASSWORD : 0) | (opts.authorized_key ? NC_SSH_AUTH_PUBLICKEY : 0))) {
            return -1;
        }
    }
    return nc_connect_ch_client_dispatch(CH_CLIENT, ch_session_clb);
}

int
main(int argc, char **argv)
{
    struct sigaction sa = {.sa_handler = on_signal};
    struct nc_session *session, *new_session;
    struct timespec now;
    int rc;

    clock_gettime(CLOCK_MONOTONIC, &started);
    if (parse_args(argc, argv)) {
        usage();
        return 2;
    }
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    nc_set_print_clb_session(ln2_log);
    nc_verbosity(opts.verbose ? NC_VERB_VERBOSE : NC_VERB_WARNING);
    if (load_schema() || nc_server_init(ctx)) {
        return 1;
    }
    nc_set_global_rpc_clb(rpc_clb);
    nc_server_set_hello_timeout(opts.hello_timeout);
    ps = nc_ps_new();
    if (setup_call_home()) {
        say("call-home setup failed");
        return 1;
    }
    say("calling home to %s port %u over %s", opts.ch_host, opts.ch_port, opts.tls ? "TLS" : "SSH");

    while (!stopping) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - started.tv_sec >= opts.lifetime) {
            say("lifetime of %d s reached", opts.lifetime);
            break;
        }
        session = NULL;
        rc = nc_ps_poll(ps, POLL_TIMEOUT_MS, &session);
        if (rc & NC_PSPOLL_NOSESSIONS) {
            usleep(POLL_TIMEOUT_MS * 1000);
            continue;
        }
        if (rc & NC_PSPOLL_SSH_CHANNEL) {
            /* a new "netconf" channel on a connection we already poll */
            if (nc_ps_accept_ssh_channel(ps, &new_session) == NC_MSG_HELLO) {
                nc_ps_add_session(ps, new_session);
                say("session %u opened on an existing connection", nc_session_get_id(new_session));
            }
        }
        if ((rc & NC_PSPOLL_SESSION_TERM) && session) {
            nc_ps_del_session(ps, session);
            session_ended(session);
            nc_session_free(session, NULL);
        }
    }

    /* no nc_ps_clear()/nc_server_destroy(): freeing a call-home session waits
     * for the call-home thread, which may be inside a new handshake */
    say("stopping after %u established call-home sessions", established);
    return 0;
}
