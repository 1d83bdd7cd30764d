/*
 * ln2_manager: the C floor of benchmarks/bench_storm.py.  A NETCONF manager
 * on libnetconf2's client call-home API (Debian's libnetconf2 2.0.x with
 * libyang 2.1): it listens, and accepts --count call-home SSH sessions one
 * after another with nc_accept_callhome(), which runs the SSH client
 * (libssh), checks the host key, authenticates with a password, opens the
 * "netconf" channel and exchanges <hello>: the same work as one of our
 * call-home sessions with its hello.
 *
 * The host key check is the one a call-home manager must make (RFC 8071 s5):
 * the key's SHA-256 fingerprint ("SHA256:<base64>", as OpenSSH prints it)
 * must be one of the pinned fingerprints in --fingerprints (one a line).
 *
 * Every session shares one libyang context (nc_accept_callhome's ctx
 * argument) with the modules a device announces preloaded (--module
 * NAME[@REVISION], found in the --searchpath directories), so no session
 * builds a context of its own or searches for a module.  libnetconf2 listens with a backlog of 5; a
 * storm of devices dialling at once would then see dropped SYNs and measure
 * TCP's retransmission timer, so the listening socket is given a larger
 * backlog (listen(2) again on the socket libnetconf2 bound).
 *
 * Output (stdout, one line each, flushed):
 *   "ready <port>"                      listening, context built
 *   "first"                             the first session is through (ok or not)
 *   "done <ok> <failed> <seconds>"      --count sessions accepted (or failed)
 * It then holds the sessions until stdin closes, and exits.
 */
#define _GNU_SOURCE

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libssh/libssh.h>
#include <libyang/libyang.h>
#include <nc_client.h>

#define BACKLOG 4096

static struct {
    const char *address;
    uint16_t port;
    int count;
    const char *fingerprints;
    const char *username;
    const char *password;
    const char *searchpaths[8];
    int searchpath_count;
    const char *modules[16];
    int module_count;
    int timeout_ms;
    int verbose;
} opts = {.address = "127.0.0.1", .count = 1, .timeout_ms = 60000};

static char **pinned;
static size_t pinned_count;
static unsigned rejected_keys;

static int
compare_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int
load_fingerprints(const char *path)
{
    FILE *file = fopen(path, "r");
    char line[256];
    size_t size = 0;

    if (!file) {
        fprintf(stderr, "cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof line, file)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0]) {
            continue;
        }
        if (pinned_count == size) {
            size = size ? 2 * size : 1024;
            pinned = realloc(pinned, size * sizeof *pinned);
        }
        pinned[pinned_count++] = strdup(line);
    }
    fclose(file);
    qsort(pinned, pinned_count, sizeof *pinned, compare_str);
    return 0;
}

/* 0: the device's host key is pinned (accept), else refuse before authenticating */
static int
hostkey_check(const char *hostname, ssh_session session, void *priv)
{
    ssh_key key = NULL;
    unsigned char *hash = NULL;
    size_t hash_len = 0;
    char *text = NULL;
    int found = 0;

    (void)hostname;
    (void)priv;
    if (ssh_get_server_publickey(session, &key) != SSH_OK) {
        return -1;
    }
    if (ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA256, &hash, &hash_len) == 0) {
        text = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, hash_len);
        found = text && bsearch(&text, pinned, pinned_count, sizeof *pinned, compare_str) != NULL;
    }
    ssh_string_free_char(text);
    ssh_clean_pubkey_hash(&hash);
    ssh_key_free(key);
    if (!found) {
        ++rejected_keys;
        return -1;
    }
    return 0;
}

static char *
password_clb(const char *username, const char *hostname, void *priv)
{
    (void)username;
    (void)hostname;
    (void)priv;
    return strdup(opts.password);
}

static void
quiet_log(NC_VERB_LEVEL level, const char *msg)
{
    static const char *names[] = {"ERR", "WRN", "VRB", "DBG", "DBL"};

    fprintf(stderr, "libnetconf2 %s: %s\n", names[level], msg);
}

/* listen(2) again, with a larger backlog, on every listening TCP socket of
 * this process bound to our port (the one nc_client_ssh_ch_add_bind_listen made) */
static int
raise_backlog(void)
{
    DIR *dir = opendir("/proc/self/fd");
    struct dirent *entry;
    struct sockaddr_storage addr;
    socklen_t len;
    int fd, listening, raised = 0;
    socklen_t optlen;

    if (!dir) {
        return -1;
    }
    while ((entry = readdir(dir))) {
        fd = atoi(entry->d_name);
        if (entry->d_name[0] == '.' || fd == dirfd(dir)) {
            continue;
        }
        len = sizeof addr;
        optlen = sizeof listening;
        if (getsockname(fd, (struct sockaddr *)&addr, &len) ||
                getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &optlen) || !listening) {
            continue;
        }
        if ((addr.ss_family == AF_INET && ntohs(((struct sockaddr_in *)&addr)->sin_port) == opts.port) ||
                (addr.ss_family == AF_INET6 && ntohs(((struct sockaddr_in6 *)&addr)->sin6_port) == opts.port)) {
            if (listen(fd, BACKLOG) == 0) {
                ++raised;
            }
        }
    }
    closedir(dir);
    return raised ? 0 : -1;
}

static int
parse_args(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"address", required_argument, NULL, 'a'}, {"port", required_argument, NULL, 'p'},
        {"count", required_argument, NULL, 'n'}, {"fingerprints", required_argument, NULL, 'f'},
        {"username", required_argument, NULL, 'u'}, {"password-env", required_argument, NULL, 'P'},
        {"searchpath", required_argument, NULL, 's'}, {"module", required_argument, NULL, 'm'},
        {"timeout", required_argument, NULL, 't'}, {"verbose", no_argument, NULL, 'v'}, {NULL, 0, NULL, 0}
    };
    int c;

    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'a': opts.address = optarg; break;
        case 'p': opts.port = (uint16_t)atoi(optarg); break;
        case 'n': opts.count = atoi(optarg); break;
        case 'f': opts.fingerprints = optarg; break;
        case 'u': opts.username = optarg; break;
        case 'P': opts.password = getenv(optarg); break;
        case 's':
            if (opts.searchpath_count == 8) {
                return -1;
            }
            opts.searchpaths[opts.searchpath_count++] = optarg;
            break;
        case 'm':
            if (opts.module_count == 16) {
                return -1;
            }
            opts.modules[opts.module_count++] = optarg;
            break;
        case 't': opts.timeout_ms = 1000 * atoi(optarg); break;
        case 'v': opts.verbose = 1; break;
        default: return -1;
        }
    }
    return (opts.port && opts.count > 0 && opts.fingerprints && opts.username && opts.password && opts.searchpath_count) ?
            0 : -1;
}

int
main(int argc, char **argv)
{
    struct ly_ctx *ctx = NULL;
    struct nc_session *session;
    struct timespec start, end;
    char line[16];
    int i, ok = 0, failed = 0, rc;

    if (parse_args(argc, argv)) {
        fprintf(stderr, "usage: ln2_manager --port P --count N --fingerprints FILE --username U --password-env VAR\n"
                "                   --searchpath YANG_DIR... [--module NAME[@REV]]... [--address A] [--timeout S] [--verbose]\n");
        return 2;
    }
    if (load_fingerprints(opts.fingerprints)) {
        return 1;
    }
    nc_set_print_clb(quiet_log);
    nc_verbosity(opts.verbose ? NC_VERB_VERBOSE : NC_VERB_WARNING);
    if (ly_ctx_new(opts.searchpaths[0], LY_CTX_DISABLE_SEARCHDIR_CWD, &ctx)) {
        fprintf(stderr, "cannot create a libyang context on %s\n", opts.searchpaths[0]);
        return 1;
    }
    for (i = 1; i < opts.searchpath_count; ++i) {
        ly_ctx_set_searchdir(ctx, opts.searchpaths[i]);
    }
    for (i = 0; i < opts.module_count; ++i) {
        /* NAME or NAME@REVISION */
        char *name = strdup(opts.modules[i]), *revision = strchr(name, '@');

        if (revision) {
            *revision++ = '\0';
        }
        if (!ly_ctx_load_module(ctx, name, revision, NULL)) {
            fprintf(stderr, "cannot load %s: %s\n", opts.modules[i], ly_errmsg(ctx));
            return 1;
        }
        free(name);
    }
    nc_client_init();
    nc_client_set_schema_searchpath(opts.searchpaths[0]);
    nc_client_ssh_ch_set_username(opts.username);
    nc_client_ssh_ch_set_auth_pref(NC_SSH_AUTH_PASSWORD, 3);
    nc_client_ssh_ch_set_auth_pref(NC_SSH_AUTH_PUBLICKEY, -1);
    nc_client_ssh_ch_set_auth_pref(NC_SSH_AUTH_INTERACTIVE, -1);
    nc_client_ssh_ch_set_auth_password_clb(password_clb, NULL);
    nc_client_ssh_ch_set_auth_hostkey_check_clb(hostkey_check, NULL);
    if (nc_client_ssh_ch_add_bind_listen(opts.address, opts.port)) {
        fprintf(stderr, "cannot listen on %s port %u\n", opts.address, opts.port);
        return 1;
    }
    if (raise_backlog()) {
        fprintf(stderr, "cannot raise the listen backlog on port %u\n", opts.port);
        return 1;
    }
    printf("ready %u\n", opts.port);
    fflush(stdout);

    clock_gettime(CLOCK_MONOTONIC, &start);
    for (i = 0; i < opts.count; ++i) {
        session = NULL;
        rc = nc_accept_callhome(opts.timeout_ms, ctx, &session);
        if (rc == 1) {
            ++ok;
        } else {
            ++failed;
            if (rc == 0) {
                fprintf(stderr, "no call within %d ms\n", opts.timeout_ms);
                failed += opts.count - i - 1;
                break;
            }
        }
        if (i == 0) {
            printf("first\n");
            fflush(stdout);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    printf("done %d %d %.6f\n", ok, failed, (end.tv_sec - start.tv_sec) + (end.tv_nsec - start.tv_nsec) / 1e9);
    fflush(stdout);
    if (rejected_keys) {
        fprintf(stderr, "%u host keys were not pinned\n", rejected_keys);
    }
    /* hold the sessions (the devices stay connected) until told to go */
    while (fgets(line, sizeof line, stdin)) {
    }
    /* no nc_session_free(): freeing call-home sessions waits on call-home
     * threads; the process exits and the kernel closes the connections */
    return 0;
}
