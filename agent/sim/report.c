/* fieldsync-sim: the summary table, the JSON report and the self-contained HTML report. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/sim/fleet.h"
#include "port/alloc.h"
#include "port/jsonstr.h"

/* ---- the summary ---- */

static void count_inv(const fsa__result_t *r, size_t *pass, size_t *fail, size_t *nc)
{
    for (size_t i = 0; i < r->ninv; i++) {
        if (r->inv[i].status == FSA__INV_PASS)
            (*pass)++;
        else if (r->inv[i].status == FSA__INV_FAIL)
            (*fail)++;
        else
            (*nc)++;
    }
}

fsa__verdict_t fsa__verdict(const fsa__result_t *r, size_t n, size_t *not_run)
{
    size_t checked = 0, failed = 0;
    *not_run = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < r[i].ninv; k++) {
            const fsa__inv_t *v = &r[i].inv[k];
            failed += v->status == FSA__INV_FAIL;
            checked += v->status != FSA__INV_NOT_CHECKED;
            *not_run += v->status == FSA__INV_NOT_CHECKED && strcmp(v->name, "scenario_ran") == 0;
        }
    if (failed > 0 || *not_run > 0)
        return FSA__RUN_FAILED;
    return checked == 0 ? FSA__RUN_NOTHING_CHECKED : FSA__RUN_PASSED;
}

void fsa__report_summary(FILE *out, const fsa__report_meta_t *m, const fsa__result_t *r, size_t n)
{
    fprintf(out, "fieldsync-sim: %d devices, %d ops, seed %" PRIu64 ", %d workers, %.1f s\n",
            m->devices, m->ops, m->seed, m->workers, (double)m->wall_ms / 1000.0);
    fprintf(out, "peak RSS: simulator %.1f MiB", (double)m->sim_rss_kib / 1024.0);
    if (m->server_rss_kib > 0)
        fprintf(out, ", server (largest process) %.1f MiB", (double)m->server_rss_kib / 1024.0);
    fputc('\n', out);
    if (m->server_binary != NULL)
        fprintf(out, "server: %s (fieldsync-server found via %s: %s)\n", m->server_url,
                m->server_found_via, m->server_binary);
    else
        fprintf(out, "server: %s (given with --server)\n", m->server_url);
    fprintf(out, "%-12s %7s %8s %8s %6s %8s %8s %5s %7s %12s  %s\n", "scenario", "devices",
            "recorded", "applied", "dup", "conflict", "rejected", "lost", "retries", "lag p50/p99",
            "invariants");
    size_t tp = 0, tf = 0, tn = 0;
    for (size_t i = 0; i < n; i++) {
        const fsa__result_t *x = &r[i];
        size_t p = 0, fl = 0, nc = 0;
        count_inv(x, &p, &fl, &nc);
        tp += p;
        tf += fl;
        tn += nc;
        char lag[32], inv[48];
        /* The server's counters when known (they see what a crashed device never heard);
         * otherwise what the devices' engines reported. */
        bool sv = x->have_server;
        snprintf(lag, sizeof lag, "%" PRId64 "/%" PRId64 " ms", x->lag_p50, x->lag_p99);
        if (fl)
            snprintf(inv, sizeof inv, "%zu FAIL, %zu pass", fl, p);
        else
            snprintf(inv, sizeof inv, "%zu pass", p);
        if (nc) {
            size_t l = strlen(inv);
            snprintf(inv + l, sizeof inv - l, ", %zu not checked", nc);
        }
        fprintf(out,
                "%-12s %7d %8" PRId64 " %8" PRId64 " %6" PRId64 " %8" PRId64 " %8" PRId64
                " %5" PRId64 " %7" PRId64 " %12s  %s\n",
                x->name, x->devices, x->recorded, sv ? x->s_applied : x->c_applied,
                sv ? x->s_duplicate : x->c_duplicate, sv ? x->s_conflict : x->c_conflict,
                sv ? x->s_rejected : x->c_rejected, x->lost, x->retries, lag, inv);
    }
    for (size_t i = 0; i < n; i++) {
        if (r[i].note[0] != '\0')
            fprintf(out, "note: %s: %s\n", r[i].name, r[i].note);
        for (size_t k = 0; k < r[i].ninv; k++) {
            const fsa__inv_t *v = &r[i].inv[k];
            if (v->status == FSA__INV_FAIL)
                fprintf(out, "FAIL %s: %s (%s): %s\n", r[i].name, v->name, v->how, v->details);
            else if (v->status == FSA__INV_NOT_CHECKED)
                fprintf(out, "not checked %s: %s: %s\n", r[i].name, v->name, v->details);
        }
    }
    /* How the checked ones were checked. */
    static const char *const hows[] = {"devices", "pulls", "admin API", "hook"};
    fprintf(out, "checked through:");
    for (size_t h = 0; h < sizeof hows / sizeof hows[0]; h++) {
        size_t c = 0;
        for (size_t i = 0; i < n; i++)
            for (size_t k = 0; k < r[i].ninv; k++)
                c += r[i].inv[k].status != FSA__INV_NOT_CHECKED &&
                     strncmp(r[i].inv[k].how, hows[h], strlen(hows[h])) == 0;
        fprintf(out, " %s %zu%s", hows[h], c, h + 1 < sizeof hows / sizeof hows[0] ? "," : "\n");
    }
    size_t not_run = 0;
    fsa__verdict_t verdict = fsa__verdict(r, n, &not_run);
    if (tf > 0)
        fprintf(out, "result: %zu checked, %zu passed, %zu FAILED, %zu not checked\n", tp + tf, tp,
                tf, tn);
    else if (verdict == FSA__RUN_FAILED)
        fprintf(out,
                "result: FAILED: %zu scenario(s) could not run (%zu checked, %zu passed, %zu not "
                "checked)\n",
                not_run, tp, tp, tn);
    else if (verdict == FSA__RUN_NOTHING_CHECKED)
        fprintf(out, "result: nothing checked (%zu not checked)\n", tn);
    else
        fprintf(out,
                "result: all %zu checked invariants passed (%zu checked, %zu passed, %zu not "
                "checked)\n",
                tp, tp, tp, tn);
    if (m->workdir_kept)
        fprintf(out, "workdir kept: %s\n", m->workdir);
}

/* ---- JSON ---- */

static void json_str(FILE *o, const char *s)
{
    /* The one escaper (port/jsonstr.h): short strings on the stack, longer ones allocated. */
    char small[256];
    size_t need = fsa_json_quote(s, small, sizeof small);
    if (need < sizeof small) {
        fputs(small, o);
        return;
    }
    char *big = fsa_malloc(need + 1);
    if (big == NULL) {
        fputs("\"\"", o); /* out of memory: an empty string keeps the report valid JSON */
        return;
    }
    (void)fsa_json_quote(s, big, need + 1);
    fputs(big, o);
    fsa_free(big);
}

static void json_stats(FILE *o, const fsa__stats_t *s)
{
    fprintf(o,
            "{\"applied\":%" PRId64 ",\"duplicate\":%" PRId64 ",\"conflict\":%" PRId64
            ",\"rejected\":%" PRId64 ",\"push_requests\":%" PRId64 ",\"pull_requests\":%" PRId64
            ",\"clock_skew\":%" PRId64 ",\"replay\":%" PRId64 ",\"bad_signature\":%" PRId64
            ",\"faults\":{\"5xx\":%" PRId64 ",\"429\":%" PRId64 ",\"drop\":%" PRId64
            ",\"reset\":%" PRId64 ",\"latency\":%" PRId64 "},\"entities_added\":%" PRId64 "}",
            s->applied, s->duplicate, s->conflict, s->rejected, s->push, s->pull, s->clock_skew,
            s->replay, s->bad_signature, s->f_5xx, s->f_429, s->f_drop, s->f_reset, s->f_latency,
            s->entities);
}

static void json_result(FILE *o, const fsa__result_t *r)
{
    fprintf(o, "{\"name\":");
    json_str(o, r->name);
    fprintf(o, ",\"devices\":%d,\"duration_ms\":%" PRId64 ",\"note\":", r->devices, r->duration_ms);
    json_str(o, r->note);
    fprintf(o, ",\"faults\":");
    json_str(o, r->faults);
    /* The headline counts: the server's when known, else the devices'. */
    bool sv = r->have_server;
    fprintf(o,
            ",\"counts_source\":\"%s\",\"ops\":{\"recorded\":%" PRId64 ",\"applied\":%" PRId64
            ",\"duplicate\":%" PRId64,
            sv ? "server" : "devices", r->recorded, sv ? r->s_applied : r->c_applied,
            sv ? r->s_duplicate : r->c_duplicate);
    fprintf(o,
            ",\"conflict\":%" PRId64 ",\"rejected\":%" PRId64 ",\"lost\":%" PRId64
            ",\"rebased\":%" PRId64 "},",
            sv ? r->s_conflict : r->c_conflict, sv ? r->s_rejected : r->c_rejected, r->lost,
            r->rebased);
    fprintf(o,
            "\"devices_saw\":{\"applied\":%" PRId64 ",\"duplicate\":%" PRId64
            ",\"conflict\":%" PRId64 ",\"rejected\":%" PRId64 ",\"rebased\":%" PRId64
            ",\"server_wins\":%" PRId64 ",\"converged\":%" PRId64 ",\"parked\":%" PRId64
            ",\"syncs\":%" PRId64 ",\"crashes\":%" PRId64 "},",
            r->c_applied, r->c_duplicate, r->c_conflict, r->c_rejected, r->rebased, r->server_wins,
            r->converged, r->parked, r->syncs, r->crashes);
    fprintf(o, "\"retries\":%" PRId64 ",\"admin_ops\":%" PRId64 ",", r->retries, r->admin_ops);
    fprintf(o,
            "\"sync_lag_ms\":{\"samples\":%zu,\"p50\":%" PRId64 ",\"p99\":%" PRId64
            ",\"max\":%" PRId64 "},",
            r->nlags, r->lag_p50, r->lag_p99, r->lag_max);
    fprintf(o, "\"server\":");
    if (sv)
        json_stats(o, &r->s_delta);
    else
        fprintf(o, "null");
    fprintf(o, ",\"phases\":[");
    for (size_t i = 0; i < r->nphases; i++) {
        fprintf(o, "%s{\"name\":", i ? "," : "");
        json_str(o, r->phases[i].name);
        fprintf(o, ",\"ms\":%" PRId64 ",\"devices\":%d}", r->phases[i].ms, r->phases[i].devices);
    }
    fprintf(o, "]");
    fprintf(o, ",\"conflicts_by_kind\":{");
    for (size_t i = 0; i < r->nkinds; i++) {
        fprintf(o, "%s", i ? "," : "");
        json_str(o, r->kinds[i].label);
        fprintf(o, ":%" PRId64, r->kinds[i].n);
    }
    fprintf(o, "},\"invariants\":[");
    for (size_t i = 0; i < r->ninv; i++) {
        fprintf(o, "%s{\"name\":", i ? "," : "");
        json_str(o, r->inv[i].name);
        fprintf(o, ",\"result\":\"%s\",\"pass\":%s,\"details\":",
                fsa__inv_status_name(r->inv[i].status),
                r->inv[i].status == FSA__INV_PASS ? "true" : "false");
        json_str(o, r->inv[i].details);
        fprintf(o, ",\"how\":");
        json_str(o, r->inv[i].status == FSA__INV_NOT_CHECKED ? "" : r->inv[i].how);
        fprintf(o, "}");
    }
    fprintf(o, "]}");
}

static FILE *open_out(const char *path, char *err, size_t errlen)
{
    FILE *o = fopen(path, "w");
    if (o == NULL)
        snprintf(err, errlen, "cannot write %s", path);
    return o;
}

static fsa_status_t close_out(FILE *o, const char *path, char *err, size_t errlen)
{
    bool bad = ferror(o) != 0;
    if (fclose(o) != 0 || bad) {
        snprintf(err, errlen, "cannot write %s", path);
        return FSA_EIO;
    }
    return FSA_OK;
}

fsa_status_t fsa__report_json(const char *path, const fsa__report_meta_t *m, const fsa__result_t *r,
                              size_t n, char *err, size_t errlen)
{
    FILE *o = open_out(path, err, errlen);
    if (o == NULL)
        return FSA_EIO;
    size_t tp = 0, tf = 0, tn = 0, not_run = 0;
    for (size_t i = 0; i < n; i++)
        count_inv(&r[i], &tp, &tf, &tn);
    fprintf(o, "{\"tool\":\"fieldsync-sim\",\"command\":");
    json_str(o, m->command);
    fprintf(o,
            ",\"seed\":%" PRIu64 ",\"devices\":%d,\"ops\":%d,\"workers\":%d,\"wall_ms\":%" PRId64
            ",\"peak_rss_kib\":{\"simulator\":%" PRId64 ",\"server\":%" PRId64
            "},\"server\":{\"url\":",
            m->seed, m->devices, m->ops, m->workers, m->wall_ms, m->sim_rss_kib, m->server_rss_kib);
    json_str(o, m->server_url);
    fprintf(o, ",\"binary\":");
    if (m->server_binary != NULL) {
        json_str(o, m->server_binary);
        fprintf(o, ",\"found_via\":");
        json_str(o, m->server_found_via);
    } else {
        fprintf(o, "null,\"found_via\":\"--server\"");
    }
    fprintf(o,
            "},\"invariants\":{\"pass\":%zu,\"fail\":%zu,\"not_checked\":%zu},\"ok\":%s,"
            "\"scenarios\":[",
            tp, tf, tn, fsa__verdict(r, n, &not_run) == FSA__RUN_PASSED ? "true" : "false");
    for (size_t i = 0; i < n; i++) {
        fprintf(o, "%s\n", i ? "," : "");
        json_result(o, &r[i]);
    }
    fprintf(o, "\n]}\n");
    return close_out(o, path, err, errlen);
}

/* ---- HTML with inline SVG ---- */

static void html_text(FILE *o, const char *s)
{
    for (; s != NULL && *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", o); break;
        case '>': fputs("&gt;", o); break;
        case '&': fputs("&amp;", o); break;
        case '"': fputs("&quot;", o); break;
        default: fputc(*s, o);
        }
    }
}

#define CW 460
#define CH 200
#define ML 56
#define MB 28
#define MT 24
#define MR 12

static void svg_open(FILE *o, const char *title)
{
    fprintf(o,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "viewBox=\"0 0 %d %d\" role=\"img\"><title>",
            CW, CH, CW, CH);
    html_text(o, title);
    fprintf(o,
            "</title><rect width=\"%d\" height=\"%d\" fill=\"#fff\" stroke=\"#ccc\"/>"
            "<text x=\"%d\" y=\"16\" font-size=\"12\" font-family=\"sans-serif\">",
            CW, CH, ML);
    html_text(o, title);
    fprintf(o,
            "</text><line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#888\"/>"
            "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#888\"/>",
            ML, CH - MB, CW - MR, CH - MB, ML, MT, ML, CH - MB);
}

/* Values on both axes: 0, a quarter, half, three quarters and the maximum, each with a tick;
 * x values are xmax * k / 4 printed with xdec decimals and xunit. */
static void svg_axis(FILE *o, double xmax, int xdec, const char *xunit, double ymax,
                     const char *xlabel)
{
    fprintf(o, "<g font-size=\"10\" font-family=\"sans-serif\" fill=\"#444\">");
    double w = CW - ML - MR, h = CH - MB - MT;
    for (int k = 0; k <= 4; k++) {
        double x = ML + w * k / 4.0, y = (CH - MB) - h * k / 4.0;
        fprintf(o,
                "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#888\"/>"
                "<text x=\"%.1f\" y=\"%d\" text-anchor=\"%s\">%.*f%s</text>"
                "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#888\"/>"
                "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.*f</text>",
                x, CH - MB, x, CH - MB + 3, x, CH - MB + 13, k == 4 ? "end" : "middle", xdec,
                xmax * k / 4.0, k == 4 ? xunit : "", ML - 3, y, ML, y, ML - 5, y + 3,
                ymax >= 4 ? 0 : 2, ymax * k / 4.0);
    }
    fprintf(o, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">", (ML + CW - MR) / 2, CH - 2);
    html_text(o, xlabel);
    fprintf(o, "</text></g>");
}

/* A line chart of (t, value) samples; which = 0 depth, 1 retries. */
static void svg_series(FILE *o, const fsa__result_t *r, int which, const char *title)
{
    svg_open(o, title);
    int64_t tmax = 1, vmax = 1;
    for (size_t i = 0; i < r->nsamples; i++) {
        int64_t v = which == 0 ? r->samples[i].depth : r->samples[i].retries;
        if (r->samples[i].t_ms > tmax)
            tmax = r->samples[i].t_ms;
        if (v > vmax)
            vmax = v;
    }
    svg_axis(o, (double)tmax / 1000.0, 1, " s", (double)vmax, "time since the scenario started");
    if (r->nsamples > 0) {
        fprintf(o, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"",
                which == 0 ? "#1f6feb" : "#d9480f");
        double w = CW - ML - MR, h = CH - MB - MT;
        for (size_t i = 0; i < r->nsamples; i++) {
            int64_t v = which == 0 ? r->samples[i].depth : r->samples[i].retries;
            fprintf(o, "%.1f,%.1f ", ML + w * (double)r->samples[i].t_ms / (double)tmax,
                    (CH - MB) - h * (double)v / (double)vmax);
        }
        fprintf(o, "\"/>");
    }
    fprintf(o, "</svg>\n");
}

#define LAG_BINS 24

static void svg_lags(FILE *o, const fsa__result_t *r)
{
    svg_open(o, "sync lag: record to applied (ms)");
    int64_t hi = r->nlags > 0 ? r->lags[r->nlags - 1] : 1; /* lags are sorted */
    if (hi < 1)
        hi = 1;
    int64_t bins[LAG_BINS] = {0}, bmax = 1;
    for (size_t i = 0; i < r->nlags; i++) {
        int64_t b = r->lags[i] * LAG_BINS / (hi + 1);
        if (b >= LAG_BINS)
            b = LAG_BINS - 1;
        if (b < 0)
            b = 0;
        if (++bins[b] > bmax)
            bmax = bins[b];
    }
    svg_axis(o, (double)hi, 0, " ms", (double)bmax, "lag (ms); ops per bin");
    double w = (double)(CW - ML - MR) / LAG_BINS, h = CH - MB - MT;
    for (int b = 0; b < LAG_BINS; b++) {
        double bh = h * (double)bins[b] / (double)bmax;
        fprintf(o,
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#2da44e\">"
                "<title>%" PRId64 " ops</title></rect>",
                ML + w * b + 1, (CH - MB) - bh, w - 2, bh, bins[b]);
    }
    fprintf(o, "</svg>\n");
}

static void svg_kinds(FILE *o, const fsa__result_t *r)
{
    svg_open(o, "conflicts by kind (op, outcome: resolution)");
    int64_t vmax = 1;
    for (size_t i = 0; i < r->nkinds; i++)
        if (r->kinds[i].n > vmax)
            vmax = r->kinds[i].n;
    if (r->nkinds == 0)
        fprintf(o,
                "<text x=\"%d\" y=\"%d\" font-size=\"12\" font-family=\"sans-serif\">"
                "no conflicts</text>",
                ML + 10, CH / 2);
    double row = r->nkinds > 0 ? (double)(CH - MB - MT) / (double)r->nkinds : 0;
    if (row > 28)
        row = 28;
    for (size_t i = 0; i < r->nkinds; i++) {
        double bw = (double)(CW - ML - MR - 150) * (double)r->kinds[i].n / (double)vmax;
        double y = MT + row * (double)i + 2;
        fprintf(o,
                "<rect x=\"%d\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#8250df\"/>"
                "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" font-family=\"sans-serif\">",
                ML + 2, y, bw, row - 4, ML + 6 + bw, y + row / 2 + 3);
        html_text(o, r->kinds[i].label);
        fprintf(o, " (%" PRId64 ")</text>", r->kinds[i].n);
    }
    fprintf(o, "</svg>\n");
}

/* The page's head, style and the run's line (command, fleet, seed, time, server). */
static void html_head(FILE *o, const fsa__report_meta_t *m)
{
    fprintf(o, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
               "<title>fieldsync-sim report</title><style>"
               "body{font-family:sans-serif;margin:2em;color:#222}"
               "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;"
               "font-size:13px;text-align:left}.pass{color:#1a7f37}.fail{color:#cf222e;"
               "font-weight:bold}.nc{color:#9a6700}svg{margin:4px}</style></head><body>\n");
    fprintf(o, "<h1>fieldsync-sim</h1><p>");
    html_text(o, m->command);
    fprintf(o, "<br>%d devices, %d ops, seed %" PRIu64 ", %.1f s; server ", m->devices, m->ops,
            m->seed, (double)m->wall_ms / 1000.0);
    html_text(o, m->server_url);
    fprintf(o, "</p>\n");
}

/* At a glance: the overall verdict, and one row per scenario. */
static void html_summary(FILE *o, const fsa__result_t *r, size_t n)
{
    size_t gp = 0, gf = 0, gn = 0, not_run = 0;
    for (size_t i = 0; i < n; i++)
        count_inv(&r[i], &gp, &gf, &gn);
    fsa__verdict_t verdict = fsa__verdict(r, n, &not_run);
    fprintf(o,
            "<h2>Summary: <span class=\"%s\">%s</span></h2><p>%zu invariants checked: %zu "
            "passed, %zu failed; %zu not checked</p>\n<table><tr><th>scenario</th><th>result</th>"
            "<th>passed</th><th>failed</th><th>not checked</th><th>devices</th><th>ops</th>"
            "<th>lost</th><th>time</th></tr>\n",
            verdict == FSA__RUN_FAILED            ? "fail"
            : verdict == FSA__RUN_NOTHING_CHECKED ? "nc"
                                                  : "pass",
            verdict == FSA__RUN_FAILED ? (gf > 0 ? "FAILED" : "FAILED: a scenario could not run")
            : verdict == FSA__RUN_NOTHING_CHECKED ? "nothing checked"
                                                  : "passed",
            gp + gf, gp, gf, gn);
    for (size_t i = 0; i < n; i++) {
        size_t p = 0, fl = 0, nc = 0;
        count_inv(&r[i], &p, &fl, &nc);
        const char *cls = fl > 0 ? "fail" : p == 0 ? "nc" : "pass";
        fprintf(o, "<tr><td>");
        html_text(o, r[i].name);
        fprintf(o,
                "</td><td class=\"%s\">%s</td><td>%zu</td><td>%zu</td><td>%zu</td><td>%d</td>"
                "<td>%" PRId64 "</td><td>%" PRId64 "</td><td>%.1f s</td></tr>\n",
                cls,
                fl > 0   ? "FAIL"
                : p == 0 ? "not run"
                : nc > 0 ? "pass (some not checked)"
                         : "pass",
                p, fl, nc, r[i].devices, r[i].recorded, r[i].lost,
                (double)r[i].duration_ms / 1000.0);
    }
    fprintf(o, "</table>\n");
}

/* One scenario's section: its figures, its invariants and its charts. */
static void html_scenario(FILE *o, const fsa__result_t *x)
{
    fprintf(o, "<h2>");
    html_text(o, x->name);
    fprintf(o,
            "</h2><p>%d devices, %" PRId64 " ops recorded, %" PRId64 " lost, %" PRId64
            " retries, lag p50 %" PRId64 " ms, p99 %" PRId64 " ms, %.1f s",
            x->devices, x->recorded, x->lost, x->retries, x->lag_p50, x->lag_p99,
            (double)x->duration_ms / 1000.0);
    if (x->faults[0]) {
        fprintf(o, "; server faults: ");
        html_text(o, x->faults);
    }
    if (x->note[0]) {
        fprintf(o, "<br>");
        html_text(o, x->note);
    }
    fprintf(o, "</p>\n<table><tr><th>invariant</th><th>result</th><th>checked through</th>"
               "<th>details</th></tr>\n");
    for (size_t k = 0; k < x->ninv; k++) {
        const fsa__inv_t *v = &x->inv[k];
        const char *cls = v->status == FSA__INV_PASS   ? "pass"
                          : v->status == FSA__INV_FAIL ? "fail"
                                                       : "nc";
        fprintf(o, "<tr><td>");
        html_text(o, v->name);
        fprintf(o, "</td><td class=\"%s\">%s</td><td>", cls, fsa__inv_status_name(v->status));
        html_text(o, v->status == FSA__INV_NOT_CHECKED ? "" : v->how);
        fprintf(o, "</td><td>");
        html_text(o, v->details);
        fprintf(o, "</td></tr>\n");
    }
    fprintf(o, "</table>\n<div>\n");
    svg_series(o, x, 0, "outbox depth over time (pending ops, whole fleet)");
    svg_lags(o, x);
    svg_series(o, x, 1, "retries over time (cumulative)");
    svg_kinds(o, x);
    fprintf(o, "</div>\n");
}

fsa_status_t fsa__report_html(const char *path, const fsa__report_meta_t *m, const fsa__result_t *r,
                              size_t n, char *err, size_t errlen)
{
    FILE *o = open_out(path, err, errlen);
    if (o == NULL)
        return FSA_EIO;
    html_head(o, m);
    html_summary(o, r, n);
    for (size_t i = 0; i < n; i++)
        html_scenario(o, &r[i]);
    fprintf(o, "</body></html>\n");
    return close_out(o, path, err, errlen);
}
