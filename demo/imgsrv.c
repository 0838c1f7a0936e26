/* The incident in miniature: a tiny "image service" that handles 60 requests and leaks.
 *   - every upload saves the image and forgets to close the file      (save_image)
 *   - every 10th request re-opens the cache index and never fcloses it (open_cache_index)
 *   - thumbnails and the access log are handled correctly.
 * usage: imgsrv DATA_DIR   (then it idles until killed, like a server) */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

static const char *data_dir;

static void save_image(int req) {
    char path[512];
    snprintf(path, sizeof path, "%s/upload-%d.jpg", data_dir, req);
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    (void)!write(fd, "\xff\xd8\xff\xe0", 4);
    /* BUG: the descriptor is never closed */
}

static void make_thumbnail(int req) {
    char path[512];
    snprintf(path, sizeof path, "%s/thumb-%d.jpg", data_dir, req);
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    (void)!write(fd, "\xff\xd8", 2);
    close(fd);
}

static void access_log(int req) {
    char path[512];
    snprintf(path, sizeof path, "%s/access.log", data_dir);
    FILE *f = fopen(path, "a");
    fprintf(f, "GET /img/%d 200\n", req);
    fclose(f);
}

static void open_cache_index(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/cache.idx", data_dir);
    FILE *f = fopen(path, "a+");
    fputs("x", f);
    /* BUG: no fclose(f) */
}

int main(int argc, char **argv) {
    data_dir = argc > 1 ? argv[1] : "/tmp";
    for (int req = 0; req < 60; req++) {
        save_image(req);
        make_thumbnail(req);
        access_log(req);
        if (req % 10 == 0) {
            open_cache_index();
        }
        usleep(15000);
    }
    printf("imgsrv: handled 60 requests, now idle\n");
    fflush(stdout);
    for (;;) {
        pause();
    }
}
