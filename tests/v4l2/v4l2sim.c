/*
 * v4l2sim: a simulated V4L2 capture driver below the C library.
 *
 * Built into a shared library and loaded with LD_PRELOAD (the way PipeWire's
 * pw-v4l2 works), it intercepts open/openat (and their 64-bit and fortified
 * variants), close, ioctl, mmap and munmap for the device paths it is told to
 * simulate, and passes every other call to the C library untouched. Python's
 * os.open, fcntl.ioctl, mmap.mmap and select.poll therefore run for real, with
 * the kernel's own structs from <linux/videodev2.h>, and a request code whose
 * struct size is wrong fails with ENOTTY exactly as it would on hardware.
 *
 * The device fd handed out is a real fd: one end of an AF_UNIX socketpair.
 * The driver writes one byte into it for each buffer it completes and DQBUF
 * reads one back, so poll()/select() report POLLIN exactly while a buffer is
 * waiting to be dequeued. When the device goes away, the simulator closes the
 * other end with unread data in it, which the kernel reports on the device fd
 * as POLLERR | POLLHUP (ECONNRESET).
 *
 * Configuration: one environment variable, FRAMEBUS_V4L2SIM, holding one or
 * more devices separated by ';', each a ','-separated list of options
 * (see parse_device() and tests/v4l2/README.md), e.g.
 *
 *   FRAMEBUS_V4L2SIM="path=/dev/video-sim0,type=mplane,max_buffers=3,fps=200"
 *
 * Frames: the driver thread ticks at the configured rate. Each tick takes the
 * next sequence number (from 0 after STREAMON; a tick with no queued buffer
 * is a dropped frame, a gap in the sequence, as with real drivers) and fills
 * the oldest queued buffer with a pattern: bytes 0..7 are the sequence number
 * (little-endian u64), byte i >= 8 is (i + 13 * sequence) & 0xff. For MJPG,
 * bytesused is min(sizeimage, 1024 + 256 * (sequence % 97)); for every other
 * format it is sizeimage.
 *
 * Thread safety: one mutex guards all simulator state; the driver thread
 * writes pixels outside it into a buffer it has taken off the incoming queue,
 * and STREAMOFF joins the thread before returning buffers to userspace.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#ifdef _FORTIFY_SOURCE
#undef _FORTIFY_SOURCE
#endif
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <linux/dma-buf.h>
#include <linux/videodev2.h>

#define EXPORT __attribute__((visibility("default")))
#define MAX_DEVICES 8
#define MAX_LIST 16
#define MEMFD_NAME "v4l2sim-dmabuf"
#define META_FOURCC v4l2_fourcc('U', 'V', 'C', 'H')

/* ---- the real C library ------------------------------------------------ */

static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_open_2)(const char *, int);
static int (*real_open64_2)(const char *, int);
static int (*real_close)(int);
static int (*real_ioctl)(int, unsigned long, ...);
static void *(*real_mmap)(void *, size_t, int, int, int, off_t);
static void *(*real_mmap64)(void *, size_t, int, int, int, off64_t);
static int (*real_munmap)(void *, size_t);

/* ---- simulator state ----------------------------------------------------- */

enum buf_state { BUF_DEQUEUED, BUF_QUEUED, BUF_ACTIVE, BUF_DONE };

/* One plane of a buffer: its own memory (a multi-planar format such as NM12
 * has one per plane; every other format one per buffer). */
struct sim_plane {
	/* MMAP: the driver's memory */
	int memfd;
	void *kmap;
	size_t alloc;		/* page-aligned size of memfd */
	uint32_t offset;	/* the mmap cookie */
	/* USERPTR / DMABUF: the user's memory */
	unsigned long userptr;
	uint32_t ulength;
	int dmafd;		/* as passed to QBUF, returned by DQBUF */
	void *dmamap;
	size_t dmamaplen;
	dev_t dmadev;
	ino_t dmaino;
	uint32_t bytesused;	/* of the last capture */
};

struct sim_buf {
	enum buf_state state;
	unsigned mapcount;	/* mappings of any of its planes */
	struct sim_plane p[VIDEO_MAX_PLANES];
	/* the last capture */
	uint32_t sequence, flags;
	struct timeval timestamp;
};

/* A control the driver offers (VIDIOC_QUERY_EXT_CTRL and friends). */
struct sim_ctrl {
	uint32_t id, type;
	const char *name;
	int64_t min, max, step, def;
	uint32_t skip;		/* menu items that do not exist (menu_skip_mask) */
	const char *menu[4];
};

struct sim_handle;

struct sim_dev {
	/* configuration */
	char path[PATH_MAX];
	uint32_t buf_type;	/* V4L2_BUF_TYPE_VIDEO_CAPTURE(_MPLANE), META_CAPTURE */
	uint32_t formats[MAX_LIST];
	int nformats;
	uint32_t sizes[MAX_LIST][2];
	int nsizes;
	bool stepwise;
	uint32_t fps[MAX_LIST];
	int nfps;
	uint32_t min_buffers, max_buffers, pad, chroma_pad;
	bool no_mmap, no_userptr, no_dmabuf, no_expbuf, no_buf_caps;
	bool busy_open, busy_fmt;
	uint32_t vanish_after, error_every, skip_every;
	uint32_t return_after_ms, eio_after;
	bool userptr_contig;
	char card[32], driver[16];
	int number;
	/* state */
	bool no_controls;
	char ctrl_log[PATH_MAX];	/* append every control change here */
	uint32_t width, height, pixelformat, bytesperline, sizeimage;
	uint32_t nplanes, plane_bpl[VIDEO_MAX_PLANES], plane_size[VIDEO_MAX_PLANES];
	int64_t ctrl_value[16];
	uint32_t cur_fps;
	struct sim_buf bufs[VIDEO_MAX_FRAME];
	uint32_t nbufs, memory;
	struct sim_handle *owner;
	int incoming[VIDEO_MAX_FRAME], nincoming;
	int done[VIDEO_MAX_FRAME], ndone;
	bool streaming, gone, thread_live, queue_error, vanished_once;
	struct timespec gone_at;
	pthread_t thread;
	pthread_cond_t tick;
	uint32_t sequence;
	uint64_t frames_done;
	unsigned generation;	/* bumped on every free, to orphan old mappings */
};

struct sim_handle {
	int fd;			/* the fd userspace got from open() */
	int app;		/* our own dup of it, for draining and signalling */
	int peer;		/* the driver's end of the socketpair */
	bool dead;		/* opened before an unplug: ENODEV for ever */
	dev_t sdev;
	ino_t sino;
	struct sim_dev *dev;
	struct sim_handle *next;
};

struct sim_mapping {
	void *addr;
	size_t len;
	struct sim_dev *dev;
	uint32_t index;
	unsigned generation;
	struct sim_mapping *next;
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static struct sim_dev g_devs[MAX_DEVICES];
static int g_ndevs;
static struct sim_handle *g_handles;
static struct sim_mapping *g_mappings;
static size_t g_page;

/* ---- configuration ------------------------------------------------------- */

static void die(const char *what, const char *arg)
{
	fprintf(stderr, "v4l2sim: %s: %s\n", what, arg);
	_exit(2);
}

static uint32_t parse_u32(const char *key, const char *value)
{
	char *end;
	unsigned long v = strtoul(value, &end, 0);
	if (!*value || *end || v > UINT32_MAX)
		die("bad number for option", key);
	return (uint32_t)v;
}

static uint32_t parse_fourcc(const char *s)
{
	char c[4] = {' ', ' ', ' ', ' '};
	size_t n = strlen(s);
	if (n < 1 || n > 4)
		die("bad FourCC", s);
	memcpy(c, s, n);
	return v4l2_fourcc(c[0], c[1], c[2], c[3]);
}

/* Split "a+b+c" and call fn on each part. */
static void each_part(char *list, void (*fn)(struct sim_dev *, const char *), struct sim_dev *d)
{
	char *save = NULL;
	for (char *p = strtok_r(list, "+", &save); p; p = strtok_r(NULL, "+", &save))
		fn(d, p);
}

static void add_format(struct sim_dev *d, const char *s)
{
	if (d->nformats == MAX_LIST)
		die("too many formats", s);
	d->formats[d->nformats++] = parse_fourcc(s);
}

static void add_size(struct sim_dev *d, const char *s)
{
	unsigned w, h;
	char tail;
	if (sscanf(s, "%ux%u%c", &w, &h, &tail) != 2 || !w || !h || d->nsizes == MAX_LIST)
		die("bad size", s);
	d->sizes[d->nsizes][0] = w;
	d->sizes[d->nsizes][1] = h;
	d->nsizes++;
}

static void add_fps(struct sim_dev *d, const char *s)
{
	uint32_t f = parse_u32("fps", s);
	if (!f || f > 10000 || d->nfps == MAX_LIST)
		die("bad fps", s);
	d->fps[d->nfps++] = f;
}


/* Known pixel formats: bytes per pixel of the first plane, 4:2:0 layout. */
static bool format_known(uint32_t f)
{
	switch (f) {
	case V4L2_PIX_FMT_GREY: case V4L2_PIX_FMT_YUYV: case V4L2_PIX_FMT_UYVY:
	case V4L2_PIX_FMT_RGB24: case V4L2_PIX_FMT_BGR24: case V4L2_PIX_FMT_NV12:
	case V4L2_PIX_FMT_YUV420: case V4L2_PIX_FMT_MJPEG: case V4L2_PIX_FMT_NV21:
	case V4L2_PIX_FMT_NV12M: case V4L2_PIX_FMT_NV21M: case V4L2_PIX_FMT_YUV420M:
		return true;
	}
	return false;
}

/* Formats whose planes each live in a buffer of their own (multi-planar API only). */
static bool format_separate_planes(uint32_t f)
{
	return f == V4L2_PIX_FMT_NV12M || f == V4L2_PIX_FMT_NV21M || f == V4L2_PIX_FMT_YUV420M;
}

static const char *format_description(uint32_t f)
{
	switch (f) {
	case V4L2_PIX_FMT_GREY: return "8-bit Greyscale";
	case V4L2_PIX_FMT_YUYV: return "YUYV 4:2:2";
	case V4L2_PIX_FMT_UYVY: return "UYVY 4:2:2";
	case V4L2_PIX_FMT_RGB24: return "24-bit RGB 8-8-8";
	case V4L2_PIX_FMT_BGR24: return "24-bit BGR 8-8-8";
	case V4L2_PIX_FMT_NV12: return "Y/UV 4:2:0";
	case V4L2_PIX_FMT_YUV420: return "Planar YUV 4:2:0";
	case V4L2_PIX_FMT_MJPEG: return "Motion-JPEG";
	case V4L2_PIX_FMT_NV21: return "Y/VU 4:2:0";
	case V4L2_PIX_FMT_NV12M: return "Y/UV 4:2:0 (N-C)";
	case V4L2_PIX_FMT_NV21M: return "Y/VU 4:2:0 (N-C)";
	case V4L2_PIX_FMT_YUV420M: return "Planar YUV 4:2:0 (N-C)";
	}
	return "?";
}

/* bytesperline and sizeimage of a format, as a driver computes them. */
static void format_geometry(const struct sim_dev *d, uint32_t f, uint32_t w, uint32_t h,
			    uint32_t *bpl, uint32_t *size)
{
	switch (f) {
	case V4L2_PIX_FMT_GREY:
		*bpl = w + d->pad; *size = *bpl * h; break;
	case V4L2_PIX_FMT_YUYV: case V4L2_PIX_FMT_UYVY:
		*bpl = 2 * w + d->pad; *size = *bpl * h; break;
	case V4L2_PIX_FMT_RGB24: case V4L2_PIX_FMT_BGR24:
		*bpl = 3 * w + d->pad; *size = *bpl * h; break;
	case V4L2_PIX_FMT_NV12: case V4L2_PIX_FMT_YUV420: case V4L2_PIX_FMT_NV21:
	case V4L2_PIX_FMT_NV12M: case V4L2_PIX_FMT_NV21M: case V4L2_PIX_FMT_YUV420M:
		*bpl = w + d->pad; *size = *bpl * h + 2 * ((*bpl / 2) * ((h + 1) / 2)); break;
	default: /* MJPG: a generous upper bound, no lines */
		*bpl = 0; *size = w * h * 2; break;
	}
}

static void clear_buf(struct sim_buf *b)
{
	memset(b, 0, sizeof(*b));
	for (int p = 0; p < VIDEO_MAX_PLANES; p++)
		b->p[p].memfd = b->p[p].dmafd = -1;
}

/* ---- controls: the handful a webcam offers, as uvcvideo names them ------- */

static const struct sim_ctrl g_ctrls[] = {
	{V4L2_CID_USER_CLASS, V4L2_CTRL_TYPE_CTRL_CLASS, "User Controls", 0, 0, 0, 0, 0, {0}},
	{V4L2_CID_GAIN, V4L2_CTRL_TYPE_INTEGER, "Gain", 0, 255, 1, 32, 0, {0}},
	{V4L2_CID_POWER_LINE_FREQUENCY, V4L2_CTRL_TYPE_MENU, "Power Line Frequency", 0, 2, 1, 1, 0,
	 {"Disabled", "50 Hz", "60 Hz"}},
	{V4L2_CID_WHITE_BALANCE_TEMPERATURE, V4L2_CTRL_TYPE_INTEGER, "White Balance Temperature",
	 2800, 6500, 10, 4600, 0, {0}},
	{V4L2_CID_CAMERA_CLASS, V4L2_CTRL_TYPE_CTRL_CLASS, "Camera Controls", 0, 0, 0, 0, 0, {0}},
	{V4L2_CID_EXPOSURE_AUTO, V4L2_CTRL_TYPE_MENU, "Auto Exposure", 0, 3, 1, 3, 0x5,
	 {"Auto Mode", "Manual Mode", "Shutter Priority Mode", "Aperture Priority Mode"}},
	{V4L2_CID_EXPOSURE_ABSOLUTE, V4L2_CTRL_TYPE_INTEGER, "Exposure Time, Absolute", 3, 2047, 1,
	 250, 0, {0}},
	{V4L2_CID_FOCUS_ABSOLUTE, V4L2_CTRL_TYPE_INTEGER, "Focus, Absolute", 0, 250, 5, 0, 0, {0}},
};
#define NCTRLS ((int)(sizeof(g_ctrls) / sizeof(g_ctrls[0])))

static void reset_controls(struct sim_dev *d)
{
	for (int i = 0; i < NCTRLS; i++)
		d->ctrl_value[i] = g_ctrls[i].def;
}

/*
 * Each plane's bytesperline and size; the number of planes. A separate-plane
 * format splits the single-buffer layout where its planes meet: NM12/NM21 a
 * Y plane and a chroma plane of the same bytesperline, YM12 a Y plane and two
 * of half its bytesperline. Every other format is one plane.
 */
static uint32_t format_planes(const struct sim_dev *d, uint32_t f, uint32_t w, uint32_t h,
			      uint32_t bpl[VIDEO_MAX_PLANES], uint32_t size[VIDEO_MAX_PLANES])
{
	uint32_t total;
	format_geometry(d, f, w, h, &bpl[0], &total);
	if (!format_separate_planes(f)) {
		size[0] = total;
		return 1;
	}
	size[0] = bpl[0] * h;
	if (f == V4L2_PIX_FMT_YUV420M) {
		bpl[1] = bpl[2] = bpl[0] / 2 + d->chroma_pad;
		size[1] = size[2] = bpl[1] * ((h + 1) / 2);
		return 3;
	}
	bpl[1] = bpl[0] + d->chroma_pad;
	size[1] = bpl[1] * ((h + 1) / 2);
	return 2;
}

/* Set the device's current format and its plane geometry. */
static void set_format(struct sim_dev *d, uint32_t code, uint32_t w, uint32_t h)
{
	d->pixelformat = code;
	d->width = w;
	d->height = h;
	format_geometry(d, code, w, h, &d->bytesperline, &d->sizeimage);
	d->nplanes = format_planes(d, code, w, h, d->plane_bpl, d->plane_size);
}

static void parse_device(struct sim_dev *d, char *spec)
{
	uint32_t width = 0, height = 0;
	char *save = NULL;

	d->buf_type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
	d->min_buffers = 1;
	d->max_buffers = VIDEO_MAX_FRAME;
	snprintf(d->card, sizeof(d->card), "framebus simulated camera %d", d->number);
	snprintf(d->driver, sizeof(d->driver), "v4l2sim");
	for (char *opt = strtok_r(spec, ",", &save); opt; opt = strtok_r(NULL, ",", &save)) {
		char *value = strchr(opt, '=');
		if (value)
			*value++ = '\0';
#define IS(name) (!strcmp(opt, name) && value)
#define FLAG(name, field) else if (!strcmp(opt, name) && !value) d->field = true
#define NUM(name, field) else if (IS(name)) d->field = parse_u32(opt, value)
		if (IS("path"))
			snprintf(d->path, sizeof(d->path), "%s", value);
		else if (IS("type")) {
			if (!strcmp(value, "single"))
				d->buf_type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
			else if (!strcmp(value, "mplane"))
				d->buf_type = V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE;
			else if (!strcmp(value, "meta"))
				d->buf_type = V4L2_BUF_TYPE_META_CAPTURE;
			else
				die("bad type (single, mplane or meta)", value);
		}
		else if (IS("formats")) {
			d->nformats = 0;	/* a later list replaces an earlier one */
			each_part(value, add_format, d);
		}
		else if (IS("sizes")) {
			d->nsizes = 0;	/* a later list replaces an earlier one */
			each_part(value, add_size, d);
		}
		else if (IS("fps")) {
			d->nfps = 0;	/* a later list replaces an earlier one */
			each_part(value, add_fps, d);
		}
		else if (IS("ctrl_log"))
			snprintf(d->ctrl_log, sizeof(d->ctrl_log), "%s", value);
		else if (IS("card"))
			snprintf(d->card, sizeof(d->card), "%s", value);
		else if (IS("driver"))
			snprintf(d->driver, sizeof(d->driver), "%s", value);
		else if (IS("width"))
			width = parse_u32(opt, value);
		else if (IS("height"))
			height = parse_u32(opt, value);
		NUM("min_buffers", min_buffers);
		NUM("max_buffers", max_buffers);
		NUM("pad", pad);
		NUM("chroma_pad", chroma_pad);
		NUM("vanish_after", vanish_after);
		NUM("error_every", error_every);
		NUM("skip_every", skip_every);
		NUM("return_after_ms", return_after_ms);
		NUM("eio_after", eio_after);
		FLAG("userptr_contig", userptr_contig);
		FLAG("stepwise", stepwise);
		FLAG("no_mmap", no_mmap);
		FLAG("no_userptr", no_userptr);
		FLAG("no_dmabuf", no_dmabuf);
		FLAG("no_expbuf", no_expbuf);
		FLAG("no_buf_caps", no_buf_caps);
		FLAG("busy", busy_open);
		FLAG("busy_fmt", busy_fmt);
		FLAG("no_controls", no_controls);
		else
			die("unknown option or missing value", opt);
#undef IS
#undef FLAG
#undef NUM
	}
	if (!d->path[0])
		die("a device needs", "path=");
	if (!d->nformats)
		d->formats[d->nformats++] = V4L2_PIX_FMT_YUYV;
	for (int i = 0; i < d->nformats; i++) {
		if (!format_known(d->formats[i]))
			die("unsupported format",
			    "(GREY YUYV UYVY RGB3 BGR3 NV12 NV21 YU12 MJPG NM12 NM21 YM12)");
		if (format_separate_planes(d->formats[i]) &&
		    d->buf_type != V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE)
			die("separate-plane formats (NM12 NM21 YM12) need", "type=mplane");
	}
	if (!d->nsizes) {
		if (width && height) {
			d->sizes[0][0] = width;
			d->sizes[0][1] = height;
			d->nsizes = 1;
		} else {
			d->sizes[0][0] = 640; d->sizes[0][1] = 480;
			d->sizes[1][0] = 320; d->sizes[1][1] = 240;
			d->nsizes = 2;
		}
	}
	if (!d->nfps)
		d->fps[d->nfps++] = 30;
	if (d->max_buffers < 1 || d->max_buffers > VIDEO_MAX_FRAME || d->min_buffers < 1 ||
	    d->min_buffers > d->max_buffers)
		die("bad buffer limits", "min_buffers/max_buffers");
	set_format(d, d->formats[0], width ? width : d->sizes[0][0],
		   height ? height : d->sizes[0][1]);
	d->cur_fps = d->fps[0];
	reset_controls(d);
	for (int i = 0; i < VIDEO_MAX_FRAME; i++)
		clear_buf(&d->bufs[i]);
}

/*
 * fork(): take the lock across it so the child never inherits it held (by the
 * driver thread, say), and tell the child it has no driver threads: a child
 * that runs close() on its way to exec() must not deadlock.
 */
static void atfork_prepare(void)
{
	pthread_mutex_lock(&g_lock);
}

static void atfork_parent(void)
{
	pthread_mutex_unlock(&g_lock);
}

static void atfork_child(void)
{
	for (int i = 0; i < g_ndevs; i++) {
		g_devs[i].thread_live = false;
		g_devs[i].streaming = false;
	}
	pthread_mutex_unlock(&g_lock);
}

static void init(void)
{
	pthread_condattr_t attr;
	const char *env;
	char *copy, *save = NULL;

#define RESOLVE(var, name) var = dlsym(RTLD_NEXT, name)
	RESOLVE(real_open, "open");
	RESOLVE(real_open64, "open64");
	RESOLVE(real_openat, "openat");
	RESOLVE(real_openat64, "openat64");
	RESOLVE(real_open_2, "__open_2");
	RESOLVE(real_open64_2, "__open64_2");
	RESOLVE(real_close, "close");
	RESOLVE(real_ioctl, "ioctl");
	RESOLVE(real_mmap, "mmap");
	RESOLVE(real_mmap64, "mmap64");
	RESOLVE(real_munmap, "munmap");
#undef RESOLVE
	g_page = (size_t)sysconf(_SC_PAGESIZE);
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
	env = getenv("FRAMEBUS_V4L2SIM");
	if (!env || !*env)
		return;
	copy = strdup(env);
	if (!copy)
		die("out of memory", "config");
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	for (char *spec = strtok_r(copy, ";", &save); spec; spec = strtok_r(NULL, ";", &save)) {
		struct sim_dev *d;
		if (g_ndevs == MAX_DEVICES)
			die("too many devices", env);
		d = &g_devs[g_ndevs];
		d->number = g_ndevs++;
		pthread_cond_init(&d->tick, &attr);
		parse_device(d, spec);
	}
	pthread_condattr_destroy(&attr);
	free(copy);
}

static inline void ensure_init(void)
{
	pthread_once(&g_once, init);
}

__attribute__((constructor)) static void v4l2sim_constructor(void)
{
	ensure_init();
}

/* ---- handles ------------------------------------------------------------- */

static struct sim_dev *dev_by_path(const char *path)
{
	if (!path)
		return NULL;
	for (int i = 0; i < g_ndevs; i++)
		if (!strcmp(g_devs[i].path, path))
			return &g_devs[i];
	return NULL;
}

/* The handle behind fd (or a dup of it); g_lock held. */
static struct sim_handle *handle_of(int fd)
{
	struct stat st;
	if (!g_handles || fd < 0 || fstat(fd, &st) || !S_ISSOCK(st.st_mode))
		return NULL;
	for (struct sim_handle *h = g_handles; h; h = h->next)
		if (h->sdev == st.st_dev && h->sino == st.st_ino)
			return h;
	return NULL;
}

static void stop_thread(struct sim_dev *d);
static void free_buffers(struct sim_dev *d);

/* An unplugged device plugged in again after return_after_ms: a fresh device. */
static bool come_back(struct sim_dev *d)
{
	struct timespec now;
	long long ms;
	bool back = false;

	if (!d->return_after_ms)
		return false;
	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (now.tv_sec - d->gone_at.tv_sec) * 1000LL + (now.tv_nsec - d->gone_at.tv_nsec) / 1000000;
	pthread_mutex_lock(&g_lock);
	if (d->gone && ms >= d->return_after_ms) {
		if (d->owner) {		/* the old owner's fd stays dead; its buffers go */
			free_buffers(d);
			d->owner = NULL;
		}
		if (d->thread_live)
			stop_thread(d);
		d->gone = false;
		d->vanished_once = false;	/* plugged in again: it may be unplugged again */
		d->queue_error = false;
		d->frames_done = 0;
		reset_controls(d);	/* a camera plugged in again starts from its defaults */
	}
	back = !d->gone;
	pthread_mutex_unlock(&g_lock);
	return back;
}

static int sim_open(struct sim_dev *d, int flags)
{
	int sv[2], app = -1;
	struct sim_handle *h;
	struct stat st;

	if (d->busy_open) {
		errno = EBUSY;
		return -1;
	}
	if (d->gone && !come_back(d)) {
		errno = ENOENT;	/* the device node is gone with the device */
		return -1;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		return -1;
	h = calloc(1, sizeof(*h));
	app = fcntl(sv[0], F_DUPFD_CLOEXEC, 0);
	if (!h || app < 0 || fstat(sv[0], &st)) {
		int saved = h ? errno : ENOMEM;
		free(h);
		real_close(sv[0]);
		real_close(sv[1]);
		if (app >= 0)
			real_close(app);
		errno = saved;
		return -1;
	}
	if (!(flags & O_CLOEXEC))
		fcntl(sv[0], F_SETFD, 0);
	if (flags & O_NONBLOCK)
		fcntl(sv[0], F_SETFL, O_NONBLOCK);
	fcntl(sv[1], F_SETFL, O_NONBLOCK);
	h->fd = sv[0];
	h->app = app;
	h->peer = sv[1];
	h->sdev = st.st_dev;
	h->sino = st.st_ino;
	h->dev = d;
	pthread_mutex_lock(&g_lock);
	h->next = g_handles;
	g_handles = h;
	pthread_mutex_unlock(&g_lock);
	return h->fd;
}

/* ---- buffers ------------------------------------------------------------- */

static size_t page_align(size_t n)
{
	return (n + g_page - 1) & ~(g_page - 1);
}

static bool is_mplane(const struct sim_dev *d)
{
	return d->buf_type == V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE;
}

static void drain(struct sim_handle *h)
{
	char junk[64];
	while (recv(h->app, junk, sizeof(junk), MSG_DONTWAIT) > 0)
		;
}

/* Stop the driver thread; g_lock held (and released while joining). */
static void stop_thread(struct sim_dev *d)
{
	d->streaming = false;
	pthread_cond_broadcast(&d->tick);
	if (d->thread_live) {
		pthread_t t = d->thread;
		pthread_mutex_unlock(&g_lock);
		pthread_join(t, NULL);
		pthread_mutex_lock(&g_lock);
		d->thread_live = false;
	}
}

/* STREAMOFF: every buffer goes back to userspace. */
static void cancel_queue(struct sim_dev *d)
{
	stop_thread(d);
	for (uint32_t i = 0; i < d->nbufs; i++)
		d->bufs[i].state = BUF_DEQUEUED;
	d->nincoming = d->ndone = 0;
	d->queue_error = false;
	if (d->owner)
		drain(d->owner);
}

static void free_buffers(struct sim_dev *d)
{
	cancel_queue(d);
	for (uint32_t i = 0; i < d->nbufs; i++) {
		for (int p = 0; p < VIDEO_MAX_PLANES; p++) {
			struct sim_plane *pl = &d->bufs[i].p[p];
			if (pl->kmap)
				real_munmap(pl->kmap, pl->alloc);
			if (pl->memfd >= 0)
				real_close(pl->memfd);
			if (pl->dmamap)
				real_munmap(pl->dmamap, pl->dmamaplen);
		}
		clear_buf(&d->bufs[i]);
	}
	d->nbufs = 0;
	d->memory = 0;
	d->generation++;
}

static bool memory_supported(const struct sim_dev *d, uint32_t memory)
{
	switch (memory) {
	case V4L2_MEMORY_MMAP: return !d->no_mmap;
	case V4L2_MEMORY_USERPTR: return !d->no_userptr;
	case V4L2_MEMORY_DMABUF: return !d->no_dmabuf;
	}
	return false;
}

static uint32_t buf_caps(const struct sim_dev *d)
{
	if (d->no_buf_caps)
		return 0;
	return (d->no_mmap ? 0 : V4L2_BUF_CAP_SUPPORTS_MMAP) |
	       (d->no_userptr ? 0 : V4L2_BUF_CAP_SUPPORTS_USERPTR) |
	       (d->no_dmabuf ? 0 : V4L2_BUF_CAP_SUPPORTS_DMABUF) |
	       V4L2_BUF_CAP_SUPPORTS_ORPHANED_BUFS;
}

static int alloc_buffers(struct sim_dev *d, uint32_t count, uint32_t memory)
{
	size_t offset = 0;
	for (uint32_t i = 0; i < count; i++) {
		struct sim_buf *b = &d->bufs[i];
		clear_buf(b);
		if (memory != V4L2_MEMORY_MMAP)
			continue;
		for (uint32_t p = 0; p < d->nplanes; p++) {	/* each plane its own memory */
			struct sim_plane *pl = &b->p[p];
			pl->alloc = page_align(d->plane_size[p]);
			pl->offset = (uint32_t)offset;
			offset += pl->alloc;
			pl->memfd = memfd_create(MEMFD_NAME, MFD_CLOEXEC);
			if (pl->memfd < 0 || ftruncate(pl->memfd, (off_t)pl->alloc))
				goto fail;
			pl->kmap = real_mmap(NULL, pl->alloc, PROT_READ | PROT_WRITE, MAP_SHARED,
					     pl->memfd, 0);
			if (pl->kmap == MAP_FAILED) {
				pl->kmap = NULL;
				goto fail;
			}
		}
	}
	d->nbufs = count;
	d->memory = memory;
	return 0;
fail:
	d->nbufs = count;
	free_buffers(d);
	return -ENOMEM;
}

/* ---- the driver thread ----------------------------------------------------- */

/* Bytes start..start+n of the frame's pattern; a separate plane continues
 * the pattern where the previous plane ended, as if the frame were one buffer. */
static void fill_pattern(uint8_t *p, uint32_t n, uint32_t sequence, uint32_t start)
{
	uint64_t seq = sequence;
	uint8_t add = (uint8_t)(13u * sequence);
	uint32_t i;
	for (i = start; i < start + n && i < 8; i++)
		p[i - start] = (uint8_t)(seq >> (8 * i));
	for (; i < start + n; i++)
		p[i - start] = (uint8_t)((uint8_t)i + add);
}

static uint32_t frame_bytesused(const struct sim_dev *d, uint32_t sequence)
{
	if (d->pixelformat == V4L2_PIX_FMT_MJPEG) {
		uint32_t n = 1024 + 256 * (sequence % 97);
		return n < d->sizeimage ? n : d->sizeimage;
	}
	return d->sizeimage;
}

/* The device disappears (unplugged): g_lock held. */
static void vanish(struct sim_dev *d)
{
	d->gone = true;
	d->vanished_once = true;
	d->streaming = false;
	clock_gettime(CLOCK_MONOTONIC, &d->gone_at);
	for (struct sim_handle *h = g_handles; h; h = h->next) {
		if (h->dev != d)
			continue;
		h->dead = true;
		if (h->peer < 0)
			continue;
		/* unread data in the closed end: ECONNRESET, POLLERR | POLLHUP */
		send(h->app, "x", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
		real_close(h->peer);
		h->peer = -1;
	}
}

static void timespec_add_ns(struct timespec *t, long ns)
{
	t->tv_nsec += ns;
	while (t->tv_nsec >= 1000000000L) {
		t->tv_nsec -= 1000000000L;
		t->tv_sec++;
	}
}

static void *driver_thread(void *arg)
{
	struct sim_dev *d = arg;
	struct timespec next;

	clock_gettime(CLOCK_MONOTONIC, &next);
	pthread_mutex_lock(&g_lock);
	while (d->streaming && !d->gone) {
		struct sim_buf *b;
		struct timespec now;
		uint32_t seq, used[VIDEO_MAX_PLANES], start = 0;
		uint8_t *dst[VIDEO_MAX_PLANES];
		int idx;

		long interval = 1000000000L / (long)d->cur_fps;
		timespec_add_ns(&next, interval);
		while (d->streaming && pthread_cond_timedwait(&d->tick, &g_lock, &next) != ETIMEDOUT)
			;
		if (!d->streaming)
			break;
		/* late by more than a frame (a loaded machine): no burst of catch-up frames */
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((now.tv_sec - next.tv_sec) * 1000000000L + (now.tv_nsec - next.tv_nsec) > interval)
			next = now;
		seq = d->sequence++;
		if (d->skip_every && d->sequence % d->skip_every == 0)
			seq = d->sequence++;	/* a frame lost on the way: a sequence gap */
		if (!d->nincoming)
			continue;		/* no buffer queued: the frame is dropped */
		idx = d->incoming[0];
		memmove(d->incoming, d->incoming + 1, (size_t)--d->nincoming * sizeof(int));
		b = &d->bufs[idx];
		b->state = BUF_ACTIVE;
		for (uint32_t p = 0; p < d->nplanes; p++) {
			struct sim_plane *pl = &b->p[p];
			dst[p] = d->memory == V4L2_MEMORY_MMAP ? pl->kmap :
				 d->memory == V4L2_MEMORY_USERPTR ? (uint8_t *)pl->userptr : pl->dmamap;
			used[p] = d->nplanes == 1 ? frame_bytesused(d, seq) : d->plane_size[p];
		}
		pthread_mutex_unlock(&g_lock);
		for (uint32_t p = 0; p < d->nplanes; p++) {
			fill_pattern(dst[p], used[p], seq, start);
			start += used[p];
		}
		pthread_mutex_lock(&g_lock);
		if (!d->streaming)
			break;
		for (uint32_t p = 0; p < d->nplanes; p++)
			b->p[p].bytesused = used[p];
		b->sequence = seq;
		/* the frame's end as a sensor clock saw it: the tick, not the fill */
		b->timestamp.tv_sec = next.tv_sec;
		b->timestamp.tv_usec = next.tv_nsec / 1000;
		b->flags = 0;
		d->frames_done++;
		if (d->error_every && d->frames_done % d->error_every == 0)
			b->flags |= V4L2_BUF_FLAG_ERROR;
		b->state = BUF_DONE;
		d->done[d->ndone++] = idx;
		if (d->owner && d->owner->peer >= 0)
			send(d->owner->peer, "b", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (d->eio_after && d->frames_done == d->eio_after) {
			d->queue_error = true;	/* as vb2_queue_error(): DQBUF is EIO until STREAMOFF */
			if (d->owner && d->owner->peer >= 0)
				send(d->owner->peer, "e", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
		}
		if (d->vanish_after && !d->vanished_once && d->frames_done >= d->vanish_after)
			vanish(d);
	}
	pthread_mutex_unlock(&g_lock);
	return NULL;
}

/* ---- ioctls -------------------------------------------------------------- */

static uint32_t device_caps(const struct sim_dev *d)
{
	switch (d->buf_type) {
	case V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE:
		return V4L2_CAP_VIDEO_CAPTURE_MPLANE | V4L2_CAP_STREAMING | V4L2_CAP_EXT_PIX_FORMAT;
	case V4L2_BUF_TYPE_META_CAPTURE:
		return V4L2_CAP_META_CAPTURE | V4L2_CAP_STREAMING;
	}
	return V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_STREAMING | V4L2_CAP_EXT_PIX_FORMAT;
}

static int vidioc_querycap(struct sim_dev *d, struct v4l2_capability *cap)
{
	memset(cap, 0, sizeof(*cap));
	snprintf((char *)cap->driver, sizeof(cap->driver), "%s", d->driver);
	snprintf((char *)cap->card, sizeof(cap->card), "%s", d->card);
	snprintf((char *)cap->bus_info, sizeof(cap->bus_info), "platform:v4l2sim-%d", d->number);
	cap->version = (6 << 16) | (1 << 8);
	cap->device_caps = device_caps(d);
	/* capabilities covers every node of the physical device, as UVC does */
	cap->capabilities = cap->device_caps | V4L2_CAP_DEVICE_CAPS |
			    (d->buf_type == V4L2_BUF_TYPE_META_CAPTURE ? V4L2_CAP_VIDEO_CAPTURE : 0);
	return 0;
}

static int vidioc_enum_fmt(struct sim_dev *d, struct v4l2_fmtdesc *f)
{
	uint32_t index = f->index, type = f->type, code;
	if (type != d->buf_type)
		return -EINVAL;
	if (d->buf_type == V4L2_BUF_TYPE_META_CAPTURE) {
		if (index)
			return -EINVAL;
		code = META_FOURCC;
	} else {
		if (index >= (uint32_t)d->nformats)
			return -EINVAL;
		code = d->formats[index];
	}
	memset(f, 0, sizeof(*f));
	f->index = index;
	f->type = type;
	f->pixelformat = code;
	f->flags = code == V4L2_PIX_FMT_MJPEG ? V4L2_FMT_FLAG_COMPRESSED : 0;
	snprintf((char *)f->description, sizeof(f->description), "%s",
		 code == META_FOURCC ? "UVC Payload Header Metadata" : format_description(code));
	return 0;
}

static bool has_format(const struct sim_dev *d, uint32_t code)
{
	for (int i = 0; i < d->nformats; i++)
		if (d->formats[i] == code)
			return true;
	return false;
}

static uint32_t max_dim(const struct sim_dev *d, int which)
{
	uint32_t m = 0;
	for (int i = 0; i < d->nsizes; i++)
		if (d->sizes[i][which] > m)
			m = d->sizes[i][which];
	return m;
}

#define STEP_MIN 16
#define STEP 2

static bool has_size(const struct sim_dev *d, uint32_t w, uint32_t h)
{
	if (d->stepwise)
		return w >= STEP_MIN && w <= max_dim(d, 0) && h >= STEP_MIN && h <= max_dim(d, 1) &&
		       (w - STEP_MIN) % STEP == 0 && (h - STEP_MIN) % STEP == 0;
	for (int i = 0; i < d->nsizes; i++)
		if (d->sizes[i][0] == w && d->sizes[i][1] == h)
			return true;
	return false;
}

static int vidioc_enum_framesizes(struct sim_dev *d, struct v4l2_frmsizeenum *f)
{
	uint32_t index = f->index, code = f->pixel_format;
	if (!has_format(d, code))
		return -EINVAL;
	if (d->stepwise ? index > 0 : index >= (uint32_t)d->nsizes)
		return -EINVAL;
	memset(f, 0, sizeof(*f));
	f->index = index;
	f->pixel_format = code;
	if (d->stepwise) {
		f->type = V4L2_FRMSIZE_TYPE_STEPWISE;
		f->stepwise.min_width = f->stepwise.min_height = STEP_MIN;
		f->stepwise.max_width = max_dim(d, 0);
		f->stepwise.max_height = max_dim(d, 1);
		f->stepwise.step_width = f->stepwise.step_height = STEP;
	} else {
		f->type = V4L2_FRMSIZE_TYPE_DISCRETE;
		f->discrete.width = d->sizes[index][0];
		f->discrete.height = d->sizes[index][1];
	}
	return 0;
}

static int vidioc_enum_frameintervals(struct sim_dev *d, struct v4l2_frmivalenum *f)
{
	uint32_t index = f->index, code = f->pixel_format, w = f->width, h = f->height;
	if (!has_format(d, code) || !has_size(d, w, h) || index >= (uint32_t)d->nfps)
		return -EINVAL;
	memset(f, 0, sizeof(*f));
	f->index = index;
	f->pixel_format = code;
	f->width = w;
	f->height = h;
	f->type = V4L2_FRMIVAL_TYPE_DISCRETE;
	f->discrete.numerator = 1;
	f->discrete.denominator = d->fps[index];
	return 0;
}

static void fill_format(const struct sim_dev *d, struct v4l2_format *f, uint32_t code,
			uint32_t w, uint32_t h)
{
	uint32_t bpl, size;
	format_geometry(d, code, w, h, &bpl, &size);
	memset(&f->fmt, 0, sizeof(f->fmt));
	f->type = d->buf_type;
	if (is_mplane(d)) {
		f->fmt.pix_mp.width = w;
		f->fmt.pix_mp.height = h;
		f->fmt.pix_mp.pixelformat = code;
		f->fmt.pix_mp.field = V4L2_FIELD_NONE;
		f->fmt.pix_mp.colorspace = V4L2_COLORSPACE_SRGB;
		uint32_t pbpl[VIDEO_MAX_PLANES], psize[VIDEO_MAX_PLANES];
		uint32_t n = format_planes(d, code, w, h, pbpl, psize);
		f->fmt.pix_mp.num_planes = (uint8_t)n;
		for (uint32_t p = 0; p < n; p++) {
			f->fmt.pix_mp.plane_fmt[p].bytesperline = pbpl[p];
			f->fmt.pix_mp.plane_fmt[p].sizeimage = psize[p];
		}
	} else {
		f->fmt.pix.width = w;
		f->fmt.pix.height = h;
		f->fmt.pix.pixelformat = code;
		f->fmt.pix.field = V4L2_FIELD_NONE;
		f->fmt.pix.colorspace = V4L2_COLORSPACE_SRGB;
		f->fmt.pix.bytesperline = bpl;
		f->fmt.pix.sizeimage = size;
	}
}

static uint32_t absdiff(uint32_t a, uint32_t b)
{
	return a > b ? a - b : b - a;
}

/* TRY_FMT and S_FMT: adjust the request to what the device can do. */
static void negotiate(const struct sim_dev *d, const struct v4l2_format *f, uint32_t *code,
		      uint32_t *w, uint32_t *h)
{
	*code = is_mplane(d) ? f->fmt.pix_mp.pixelformat : f->fmt.pix.pixelformat;
	*w = is_mplane(d) ? f->fmt.pix_mp.width : f->fmt.pix.width;
	*h = is_mplane(d) ? f->fmt.pix_mp.height : f->fmt.pix.height;
	if (!has_format(d, *code))
		*code = d->formats[0];
	if (d->stepwise) {
		uint32_t mw = max_dim(d, 0), mh = max_dim(d, 1);
		*w = *w < STEP_MIN ? STEP_MIN : *w > mw ? mw : *w;
		*h = *h < STEP_MIN ? STEP_MIN : *h > mh ? mh : *h;
		*w -= (*w - STEP_MIN) % STEP;
		*h -= (*h - STEP_MIN) % STEP;
	} else {
		int best = 0;
		uint64_t best_cost = UINT64_MAX;
		for (int i = 0; i < d->nsizes; i++) {
			uint64_t cost = (uint64_t)absdiff(d->sizes[i][0], *w) +
					absdiff(d->sizes[i][1], *h);
			if (cost < best_cost) {
				best_cost = cost;
				best = i;
			}
		}
		*w = d->sizes[best][0];
		*h = d->sizes[best][1];
	}
}

static int vidioc_fmt(struct sim_dev *d, struct sim_handle *h, unsigned long request,
		      struct v4l2_format *f)
{
	uint32_t code, w, hh;
	if (f->type != d->buf_type)
		return -EINVAL;
	if (request == VIDIOC_G_FMT) {
		fill_format(d, f, d->pixelformat, d->width, d->height);
		return 0;
	}
	if (request == VIDIOC_S_FMT) {
		if (d->busy_fmt || (d->owner && d->owner != h) || d->nbufs)
			return -EBUSY;
	}
	negotiate(d, f, &code, &w, &hh);
	fill_format(d, f, code, w, hh);
	if (request == VIDIOC_S_FMT)
		set_format(d, code, w, hh);
	return 0;
}

static int vidioc_parm(struct sim_dev *d, unsigned long request, struct v4l2_streamparm *p)
{
	if (p->type != d->buf_type)
		return -EINVAL;
	if (request == VIDIOC_S_PARM) {
		uint32_t n = p->parm.capture.timeperframe.numerator;
		uint32_t den = p->parm.capture.timeperframe.denominator;
		if (n && den) {
			double want = (double)den / n, best_cost = 1e300;
			for (int i = 0; i < d->nfps; i++) {
				double cost = want > d->fps[i] ? want - d->fps[i] : d->fps[i] - want;
				if (cost < best_cost) {
					best_cost = cost;
					d->cur_fps = d->fps[i];
				}
			}
		}
	}
	memset(&p->parm, 0, sizeof(p->parm));
	p->parm.capture.capability = V4L2_CAP_TIMEPERFRAME;
	p->parm.capture.timeperframe.numerator = 1;
	p->parm.capture.timeperframe.denominator = d->cur_fps;
	return 0;
}

static int vidioc_reqbufs(struct sim_dev *d, struct sim_handle *h, struct v4l2_requestbuffers *rb)
{
	uint32_t count = rb->count;
	int err;
	if (rb->type != d->buf_type || !memory_supported(d, rb->memory))
		return -EINVAL;
	if (d->owner && d->owner != h)
		return -EBUSY;
	if (d->streaming)
		return -EBUSY;
	rb->capabilities = buf_caps(d);
	rb->flags = 0;
	memset(rb->reserved, 0, sizeof(rb->reserved));
	free_buffers(d);
	if (count == 0) {
		d->owner = NULL;
		return 0;
	}
	if (count < d->min_buffers)
		count = d->min_buffers;
	if (count > d->max_buffers)
		count = d->max_buffers;
	err = alloc_buffers(d, count, rb->memory);
	if (err)
		return err;
	d->owner = h;
	rb->count = count;
	return 0;
}

/* Userspace's v4l2_buffer from the driver's state (QUERYBUF, QBUF, DQBUF). */
static void fill_buffer(const struct sim_dev *d, uint32_t index, struct v4l2_buffer *vb,
			bool dequeued)
{
	const struct sim_buf *b = &d->bufs[index];
	struct v4l2_plane *planes = vb->m.planes;
	uint32_t length[VIDEO_MAX_PLANES];
	uint32_t flags = V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC | V4L2_BUF_FLAG_TSTAMP_SRC_EOF;

	if (b->mapcount)
		flags |= V4L2_BUF_FLAG_MAPPED;
	if (b->state == BUF_QUEUED || b->state == BUF_ACTIVE)
		flags |= V4L2_BUF_FLAG_QUEUED;
	if (b->state == BUF_DONE)
		flags |= V4L2_BUF_FLAG_DONE;
	if (b->state == BUF_DONE || dequeued)
		flags |= b->flags & V4L2_BUF_FLAG_ERROR;
	memset(vb, 0, sizeof(*vb));
	vb->index = index;
	vb->type = d->buf_type;
	vb->memory = d->memory;
	vb->flags = flags;
	vb->field = V4L2_FIELD_NONE;
	vb->timestamp = b->timestamp;
	vb->sequence = b->sequence;
	for (uint32_t p = 0; p < d->nplanes; p++)
		length[p] = d->memory == V4L2_MEMORY_MMAP ? d->plane_size[p] :
			    d->memory == V4L2_MEMORY_USERPTR ? b->p[p].ulength :
			    (uint32_t)b->p[p].dmamaplen;
	if (is_mplane(d)) {
		vb->m.planes = planes;
		vb->length = d->nplanes;
		for (uint32_t p = 0; p < d->nplanes; p++) {
			const struct sim_plane *pl = &b->p[p];
			memset(&planes[p], 0, sizeof(planes[p]));
			planes[p].bytesused = pl->bytesused;
			planes[p].length = length[p];
			if (d->memory == V4L2_MEMORY_MMAP)
				planes[p].m.mem_offset = pl->offset;
			else if (d->memory == V4L2_MEMORY_USERPTR)
				planes[p].m.userptr = pl->userptr;
			else
				planes[p].m.fd = pl->dmafd;
		}
	} else {
		vb->bytesused = b->p[0].bytesused;
		vb->length = length[0];
		if (d->memory == V4L2_MEMORY_MMAP)
			vb->m.offset = b->p[0].offset;
		else if (d->memory == V4L2_MEMORY_USERPTR)
			vb->m.userptr = b->p[0].userptr;
		else
			vb->m.fd = b->p[0].dmafd;
	}
}

/* The checks every buffer ioctl makes before it looks at a buffer. */
static int check_buffer_arg(const struct sim_dev *d, const struct v4l2_buffer *vb)
{
	if (vb->type != d->buf_type)
		return -EINVAL;
	if (is_mplane(d)) {
		if (!vb->m.planes)
			return -EFAULT;
		/* as vb2: room for fewer planes than the format has is EINVAL */
		if (vb->length < d->nplanes || vb->length > VIDEO_MAX_PLANES)
			return -EINVAL;
	}
	return 0;
}

static int vidioc_querybuf(struct sim_dev *d, struct v4l2_buffer *vb)
{
	int err = check_buffer_arg(d, vb);
	if (err)
		return err;
	if (vb->index >= d->nbufs)
		return -EINVAL;
	fill_buffer(d, vb->index, vb, false);
	return 0;
}

static int import_dmabuf(struct sim_plane *b, int fd, uint32_t need)
{
	struct stat st;
	void *p;
	if (fd < 0 || fstat(fd, &st) || (size_t)st.st_size < need)
		return -EINVAL;
	if (b->dmamap && b->dmadev == st.st_dev && b->dmaino == st.st_ino)
		return 0;
	p = real_mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return -EINVAL;
	if (b->dmamap)
		real_munmap(b->dmamap, b->dmamaplen);
	b->dmamap = p;
	b->dmamaplen = (size_t)st.st_size;
	b->dmadev = st.st_dev;
	b->dmaino = st.st_ino;
	return 0;
}

static int vidioc_qbuf(struct sim_dev *d, struct sim_handle *h, struct v4l2_buffer *vb)
{
	struct sim_buf *b;
	int err = check_buffer_arg(d, vb);
	if (err)
		return err;
	if (d->owner != h)
		return d->owner ? -EBUSY : -EINVAL;
	if (vb->index >= d->nbufs || vb->memory != d->memory)
		return -EINVAL;
	b = &d->bufs[vb->index];
	if (b->state != BUF_DEQUEUED)
		return -EINVAL;
	/* every plane is checked before any is taken */
	for (uint32_t p = 0; p < d->nplanes && d->memory == V4L2_MEMORY_USERPTR; p++) {
		unsigned long ptr = is_mplane(d) ? vb->m.planes[p].m.userptr : vb->m.userptr;
		uint32_t len = is_mplane(d) ? vb->m.planes[p].length : vb->length;
		if (!ptr || len < d->plane_size[p] || d->userptr_contig)
			return -EINVAL;
	}
	for (uint32_t p = 0; p < d->nplanes; p++) {
		struct sim_plane *pl = &b->p[p];
		if (d->memory == V4L2_MEMORY_USERPTR) {
			pl->userptr = is_mplane(d) ? vb->m.planes[p].m.userptr : vb->m.userptr;
			pl->ulength = is_mplane(d) ? vb->m.planes[p].length : vb->length;
		} else if (d->memory == V4L2_MEMORY_DMABUF) {
			int fd = is_mplane(d) ? vb->m.planes[p].m.fd : vb->m.fd;
			err = import_dmabuf(pl, fd, d->plane_size[p]);
			if (err)
				return err;
			pl->dmafd = fd;
		}
	}
	b->state = BUF_QUEUED;
	b->flags = 0;
	d->incoming[d->nincoming++] = (int)vb->index;
	fill_buffer(d, vb->index, vb, false);
	return 0;
}

static bool fd_nonblocking(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	return fl >= 0 && (fl & O_NONBLOCK);
}

static int vidioc_dqbuf(struct sim_dev *d, struct sim_handle *h, int fd, struct v4l2_buffer *vb)
{
	char junk;
	int idx, err = check_buffer_arg(d, vb);
	if (err)
		return err;
	if (d->owner != h)
		return d->owner ? -EBUSY : -EINVAL;
	if (vb->memory != d->memory)
		return -EINVAL;
	for (;;) {
		struct pollfd pfd = {.fd = h->app, .events = POLLIN};
		int r;
		if (d->gone || h->dead)
			return -ENODEV;
		if (!d->streaming || d->owner != h)
			return -EINVAL;
		if (d->queue_error)
			return -EIO;
		if (d->ndone)
			break;
		if (fd_nonblocking(fd))
			return -EAGAIN;
		pthread_mutex_unlock(&g_lock);
		r = poll(&pfd, 1, 100);
		err = errno;
		pthread_mutex_lock(&g_lock);
		if (r < 0 && err == EINTR)
			return -EINTR;
	}
	idx = d->done[0];
	memmove(d->done, d->done + 1, (size_t)--d->ndone * sizeof(int));
	if (recv(h->app, &junk, 1, MSG_DONTWAIT) != 1)
		fprintf(stderr, "v4l2sim: DQBUF found no readiness byte\n");
	d->bufs[idx].state = BUF_DEQUEUED;
	fill_buffer(d, (uint32_t)idx, vb, true);
	return 0;
}

static int vidioc_streamon(struct sim_dev *d, struct sim_handle *h, const int *type)
{
	if ((uint32_t)*type != d->buf_type)
		return -EINVAL;
	if (d->owner != h)
		return d->owner ? -EBUSY : -EINVAL;
	if (!d->nbufs)
		return -EINVAL;
	if (d->streaming)
		return 0;
	d->sequence = 0;
	d->streaming = true;
	if (pthread_create(&d->thread, NULL, driver_thread, d)) {
		d->streaming = false;
		return -ENOMEM;
	}
	d->thread_live = true;
	return 0;
}

static int vidioc_streamoff(struct sim_dev *d, struct sim_handle *h, const int *type)
{
	if ((uint32_t)*type != d->buf_type)
		return -EINVAL;
	if (d->owner && d->owner != h)
		return -EBUSY;
	cancel_queue(d);
	return 0;
}

static int vidioc_expbuf(struct sim_dev *d, struct v4l2_exportbuffer *e)
{
	int fd;
	if (d->no_expbuf)
		return -ENOTTY;
	if (e->type != d->buf_type || (e->flags & ~(uint32_t)(O_CLOEXEC | O_ACCMODE)))
		return -EINVAL;
	if (d->memory != V4L2_MEMORY_MMAP || e->index >= d->nbufs || e->plane >= d->nplanes)
		return -EINVAL;
	fd = fcntl(d->bufs[e->index].p[e->plane].memfd, (e->flags & O_CLOEXEC) ? F_DUPFD_CLOEXEC : F_DUPFD, 0);
	if (fd < 0)
		return -errno;
	e->fd = fd;
	return 0;
}

/* ---- controls ------------------------------------------------------------ */

static int ctrl_index(uint32_t id)
{
	for (int i = 0; i < NCTRLS; i++)
		if (g_ctrls[i].id == id)
			return i;
	return -1;
}

static uint32_t ctrl_flags(const struct sim_dev *d, int i)
{
	const struct sim_ctrl *c = &g_ctrls[i];
	if (c->type == V4L2_CTRL_TYPE_CTRL_CLASS)
		return V4L2_CTRL_FLAG_READ_ONLY | V4L2_CTRL_FLAG_WRITE_ONLY;
	/* as uvcvideo: the exposure time is inactive unless exposure is manual (1) */
	if (c->id == V4L2_CID_EXPOSURE_ABSOLUTE &&
	    d->ctrl_value[ctrl_index(V4L2_CID_EXPOSURE_AUTO)] != 1)
		return V4L2_CTRL_FLAG_INACTIVE;
	return 0;
}

static int vidioc_query_ext_ctrl(struct sim_dev *d, struct v4l2_query_ext_ctrl *q)
{
	uint32_t want = q->id & ~(V4L2_CTRL_FLAG_NEXT_CTRL | V4L2_CTRL_FLAG_NEXT_COMPOUND);
	bool next = q->id & V4L2_CTRL_FLAG_NEXT_CTRL;
	int found = -1;
	if (d->no_controls)
		return -EINVAL;
	for (int i = 0; i < NCTRLS; i++) {	/* the table is in id order */
		if (next ? g_ctrls[i].id > want : g_ctrls[i].id == want) {
			found = i;
			break;
		}
	}
	if (found < 0)
		return -EINVAL;
	const struct sim_ctrl *c = &g_ctrls[found];
	memset(q, 0, sizeof(*q));
	q->id = c->id;
	q->type = c->type;
	snprintf(q->name, sizeof(q->name), "%s", c->name);
	q->minimum = c->min;
	q->maximum = c->max;
	q->step = (uint64_t)c->step;
	q->default_value = c->def;
	q->flags = ctrl_flags(d, found);
	q->elem_size = c->type == V4L2_CTRL_TYPE_CTRL_CLASS ? 0 : 4;
	q->elems = 1;
	return 0;
}

static int vidioc_querymenu(struct sim_dev *d, struct v4l2_querymenu *m)
{
	int i = d->no_controls ? -1 : ctrl_index(m->id);
	uint32_t id = m->id, index = m->index;
	if (i < 0 || g_ctrls[i].type != V4L2_CTRL_TYPE_MENU || index < g_ctrls[i].min ||
	    index > g_ctrls[i].max || (g_ctrls[i].skip & (1u << index)))
		return -EINVAL;
	memset(m, 0, sizeof(*m));
	m->id = id;
	m->index = index;
	snprintf((char *)m->name, sizeof(m->name), "%s", g_ctrls[i].menu[index]);
	return 0;
}

/* Append one line to ctrl_log: what a test outside this process can see. */
static void log_control(const struct sim_dev *d, int i)
{
	FILE *f;
	if (!d->ctrl_log[0] || !(f = fopen(d->ctrl_log, "ae")))
		return;
	fprintf(f, "%s=%lld streaming=%d frames=%llu\n", g_ctrls[i].name,
		(long long)d->ctrl_value[i], d->streaming ? 1 : 0, (unsigned long long)d->frames_done);
	fclose(f);
}

/* G/S/TRY_EXT_CTRLS, with the v4l2-ctrls core's rules: every control is
 * checked before any is set; an unknown one is EINVAL at its index; an
 * integer is clamped to its range and step; a menu item that does not exist
 * is ERANGE (out of range) or EINVAL (skipped). */
static int vidioc_ext_ctrls(struct sim_dev *d, unsigned long request, struct v4l2_ext_controls *cs)
{
	int64_t values[16];
	int idx[16];
	if (cs->which != V4L2_CTRL_WHICH_CUR_VAL && cs->which != V4L2_CTRL_WHICH_DEF_VAL &&
	    cs->which != V4L2_CTRL_CLASS_USER && cs->which != V4L2_CTRL_CLASS_CAMERA)
		return -EINVAL;
	if (cs->which == V4L2_CTRL_WHICH_DEF_VAL && request != VIDIOC_G_EXT_CTRLS)
		return -EINVAL;
	if (!cs->count)
		return 0;
	if (cs->count > 16)
		return -EINVAL;
	if (!cs->controls)
		return -EFAULT;
	for (uint32_t n = 0; n < cs->count; n++) {
		struct v4l2_ext_control *x = &cs->controls[n];
		int i = d->no_controls ? -1 : ctrl_index(x->id);
		const struct sim_ctrl *c;
		cs->error_idx = n;
		if (i < 0 || (cs->which >= V4L2_CTRL_CLASS_USER && cs->which < V4L2_CTRL_WHICH_DEF_VAL &&
			      (x->id & 0x0fff0000) != cs->which))
			return -EINVAL;
		c = &g_ctrls[i];
		if (c->type == V4L2_CTRL_TYPE_CTRL_CLASS)
			return -EACCES;
		idx[n] = i;
		if (request == VIDIOC_G_EXT_CTRLS)
			continue;
		values[n] = x->value;
		if (c->type == V4L2_CTRL_TYPE_MENU) {
			if (values[n] < c->min || values[n] > c->max)
				return -ERANGE;
			if (c->skip & (1u << values[n]))
				return -EINVAL;
		} else {
			values[n] = values[n] < c->min ? c->min : values[n] > c->max ? c->max : values[n];
			values[n] -= (values[n] - c->min) % c->step;
		}
	}
	cs->error_idx = cs->count;
	for (uint32_t n = 0; n < cs->count; n++) {
		struct v4l2_ext_control *x = &cs->controls[n];
		int i = idx[n];
		if (request == VIDIOC_G_EXT_CTRLS) {
			x->value = (int32_t)(cs->which == V4L2_CTRL_WHICH_DEF_VAL ? g_ctrls[i].def :
					     d->ctrl_value[i]);
			continue;
		}
		x->value = (int32_t)values[n];
		if (request == VIDIOC_S_EXT_CTRLS) {
			d->ctrl_value[i] = values[n];
			log_control(d, i);
		}
	}
	return 0;
}

static int dev_ioctl(struct sim_handle *h, int fd, unsigned long request, void *arg)
{
	struct sim_dev *d = h->dev;
	if (d->gone || h->dead)
		return -ENODEV;
	if (_IOC_SIZE(request) && !arg)
		return -EFAULT;
	if (d->buf_type == V4L2_BUF_TYPE_META_CAPTURE && request != VIDIOC_QUERYCAP &&
	    request != VIDIOC_ENUM_FMT)
		return -ENOTTY;
	switch (request) {
	case VIDIOC_QUERYCAP: return vidioc_querycap(d, arg);
	case VIDIOC_ENUM_FMT: return vidioc_enum_fmt(d, arg);
	case VIDIOC_ENUM_FRAMESIZES: return vidioc_enum_framesizes(d, arg);
	case VIDIOC_ENUM_FRAMEINTERVALS: return vidioc_enum_frameintervals(d, arg);
	case VIDIOC_G_FMT: case VIDIOC_S_FMT: case VIDIOC_TRY_FMT:
		return vidioc_fmt(d, h, request, arg);
	case VIDIOC_G_PARM: case VIDIOC_S_PARM: return vidioc_parm(d, request, arg);
	case VIDIOC_REQBUFS: return vidioc_reqbufs(d, h, arg);
	case VIDIOC_QUERYBUF: return vidioc_querybuf(d, arg);
	case VIDIOC_QBUF: return vidioc_qbuf(d, h, arg);
	case VIDIOC_DQBUF: return vidioc_dqbuf(d, h, fd, arg);
	case VIDIOC_STREAMON: return vidioc_streamon(d, h, arg);
	case VIDIOC_STREAMOFF: return vidioc_streamoff(d, h, arg);
	case VIDIOC_EXPBUF: return vidioc_expbuf(d, arg);
	case VIDIOC_QUERY_EXT_CTRL: return vidioc_query_ext_ctrl(d, arg);
	case VIDIOC_QUERYMENU: return vidioc_querymenu(d, arg);
	case VIDIOC_G_EXT_CTRLS: case VIDIOC_S_EXT_CTRLS: case VIDIOC_TRY_EXT_CTRLS:
		return vidioc_ext_ctrls(d, request, arg);
	}
	return -ENOTTY;
}

/* DMA_BUF_IOCTL_SYNC on a buffer this driver exported. */
static bool is_sim_dmabuf(int fd)
{
	char link[64], target[128];
	ssize_t n;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, target, sizeof(target) - 1);
	if (n < 0)
		return false;
	target[n] = '\0';
	return !strncmp(target, "/memfd:" MEMFD_NAME " ", strlen("/memfd:" MEMFD_NAME " "));
}

static int dma_buf_sync(const struct dma_buf_sync *s)
{
	if (!s) {
		errno = EFAULT;
		return -1;
	}
	if ((s->flags & ~(__u64)DMA_BUF_SYNC_VALID_FLAGS_MASK) || !(s->flags & DMA_BUF_SYNC_RW)) {
		errno = EINVAL;
		return -1;
	}
	return 0;
}

/* ---- release ------------------------------------------------------------- */

static void release(struct sim_handle *h)
{
	struct sim_dev *d = h->dev;
	if (d->owner == h) {
		free_buffers(d);
		d->owner = NULL;
	}
	if (d->thread_live && !d->streaming)
		stop_thread(d);	/* a driver thread that ended with the device */
	for (struct sim_handle **p = &g_handles; *p; p = &(*p)->next)
		if (*p == h) {
			*p = h->next;
			break;
		}
	real_close(h->app);
	if (h->peer >= 0)
		real_close(h->peer);
	free(h);
}

/* ---- the intercepted C library calls ------------------------------------- */

#define NEEDS_MODE(flags) (((flags) & O_CREAT) || ((flags) & O_TMPFILE) == O_TMPFILE)
#define GET_MODE(mode, flags)                                                                      \
	do {                                                                                       \
		if (NEEDS_MODE(flags)) {                                                           \
			va_list ap;                                                                \
			va_start(ap, flags);                                                       \
			mode = va_arg(ap, mode_t);                                                 \
			va_end(ap);                                                                \
		}                                                                                  \
	} while (0)

EXPORT int open(const char *path, int flags, ...)
{
	mode_t mode = 0;
	struct sim_dev *d;
	GET_MODE(mode, flags);
	ensure_init();
	d = dev_by_path(path);
	return d ? sim_open(d, flags) : real_open(path, flags, mode);
}

EXPORT int open64(const char *path, int flags, ...)
{
	mode_t mode = 0;
	struct sim_dev *d;
	GET_MODE(mode, flags);
	ensure_init();
	d = dev_by_path(path);
	return d ? sim_open(d, flags) : real_open64(path, flags, mode);
}

EXPORT int __open_2(const char *path, int flags)
{
	struct sim_dev *d;
	ensure_init();
	d = dev_by_path(path);
	return d ? sim_open(d, flags) : real_open_2(path, flags);
}

EXPORT int __open64_2(const char *path, int flags)
{
	struct sim_dev *d;
	ensure_init();
	d = dev_by_path(path);
	return d ? sim_open(d, flags) : real_open64_2(path, flags);
}

EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
	mode_t mode = 0;
	struct sim_dev *d;
	GET_MODE(mode, flags);
	ensure_init();
	d = (path[0] == '/' || dirfd == AT_FDCWD) ? dev_by_path(path) : NULL;
	return d ? sim_open(d, flags) : real_openat(dirfd, path, flags, mode);
}

EXPORT int openat64(int dirfd, const char *path, int flags, ...)
{
	mode_t mode = 0;
	struct sim_dev *d;
	GET_MODE(mode, flags);
	ensure_init();
	d = (path[0] == '/' || dirfd == AT_FDCWD) ? dev_by_path(path) : NULL;
	return d ? sim_open(d, flags) : real_openat64(dirfd, path, flags, mode);
}

EXPORT int close(int fd)
{
	ensure_init();
	if (g_ndevs) {
		struct sim_handle *h;
		pthread_mutex_lock(&g_lock);
		h = handle_of(fd);
		if (h && h->fd == fd)
			release(h);
		pthread_mutex_unlock(&g_lock);
	}
	return real_close(fd);
}

EXPORT int ioctl(int fd, unsigned long request, ...)
{
	va_list ap;
	void *arg;
	va_start(ap, request);
	arg = va_arg(ap, void *);
	va_end(ap);
	ensure_init();
	if (g_ndevs) {
		struct sim_handle *h;
		int ret = 0;
		pthread_mutex_lock(&g_lock);
		h = handle_of(fd);
		if (h)
			ret = dev_ioctl(h, fd, request, arg);
		pthread_mutex_unlock(&g_lock);
		if (h) {
			if (ret < 0) {
				errno = -ret;
				return -1;
			}
			return ret;
		}
		if (request == DMA_BUF_IOCTL_SYNC && is_sim_dmabuf(fd))
			return dma_buf_sync(arg);
	}
	return real_ioctl(fd, request, arg);
}

/* mmap on a device fd maps the backing memfd of the buffer at that offset. */
static void *sim_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off, bool *ours)
{
	struct sim_handle *h;
	struct sim_mapping *m;
	struct sim_dev *d;
	void *p = MAP_FAILED;
	int err = EINVAL;

	*ours = false;
	if (!g_ndevs)
		return MAP_FAILED;
	pthread_mutex_lock(&g_lock);
	h = handle_of(fd);
	if (!h)
		goto out;
	*ours = true;
	d = h->dev;
	if (d->gone || h->dead) {
		err = ENODEV;
		goto out;
	}
	if ((flags & MAP_TYPE) == MAP_PRIVATE || d->memory != V4L2_MEMORY_MMAP || !len)
		goto out;
	for (uint32_t i = 0; i < d->nbufs * d->nplanes; i++) {
		struct sim_buf *b = &d->bufs[i / d->nplanes];
		struct sim_plane *pl = &b->p[i % d->nplanes];
		if (off < 0 || (uint64_t)off != pl->offset)
			continue;
		if (len > pl->alloc)
			goto out;
		m = calloc(1, sizeof(*m));
		if (!m) {
			err = ENOMEM;
			goto out;
		}
		p = real_mmap(addr, len, prot, flags, pl->memfd, 0);
		if (p == MAP_FAILED) {
			err = errno;
			free(m);
			goto out;
		}
		m->addr = p;
		m->len = len;
		m->dev = d;
		m->index = i / d->nplanes;
		m->generation = d->generation;
		m->next = g_mappings;
		__atomic_store_n(&g_mappings, m, __ATOMIC_RELEASE);
		b->mapcount++;
		break;
	}
out:
	pthread_mutex_unlock(&g_lock);
	if (p == MAP_FAILED)
		errno = err;
	return p;
}

EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	bool ours;
	void *p;
	ensure_init();
	p = sim_mmap(addr, len, prot, flags, fd, off, &ours);
	return ours ? p : real_mmap(addr, len, prot, flags, fd, off);
}

EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off64_t off)
{
	bool ours;
	void *p;
	ensure_init();
	p = sim_mmap(addr, len, prot, flags, fd, (off_t)off, &ours);
	return ours ? p : real_mmap64(addr, len, prot, flags, fd, off);
}

EXPORT int munmap(void *addr, size_t len)
{
	ensure_init();
	if (__atomic_load_n(&g_mappings, __ATOMIC_ACQUIRE)) {
		pthread_mutex_lock(&g_lock);
		for (struct sim_mapping **p = &g_mappings; *p; p = &(*p)->next) {
			struct sim_mapping *m = *p;
			if (m->addr != addr)
				continue;
			if (m->generation == m->dev->generation && m->index < m->dev->nbufs &&
			    m->dev->bufs[m->index].mapcount)
				m->dev->bufs[m->index].mapcount--;
			*p = m->next;
			free(m);
			break;
		}
		pthread_mutex_unlock(&g_lock);
	}
	return real_munmap(addr, len);
}
