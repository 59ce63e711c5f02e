#include <cairo.h>
#include <librsvg/rsvg.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <sstream>

#include "core/error.h"
#include "study/study.h"

namespace syncbn::study {

MeanStd mean_std(const std::vector<double>& values) {
  MeanStd m;
  m.n = static_cast<int>(values.size());
  if (values.empty()) return m;
  double sum = 0;
  for (double v : values) sum += v;
  m.mean = sum / m.n;
  if (m.n < 2) return m;
  double squares = 0;
  for (double v : values) squares += (v - m.mean) * (v - m.mean);
  m.std = std::sqrt(squares / (m.n - 1));
  return m;
}

namespace {

// label → per-rank batch → the runs' values of `field`, labels in order of first appearance.
template <typename Field>
std::vector<std::pair<std::string, std::map<int64_t, std::vector<double>>>> group_by(
    const std::vector<RunResult>& results, Field field) {
  std::vector<std::pair<std::string, std::map<int64_t, std::vector<double>>>> groups;
  for (const RunResult& r : results) {
    const std::string label = r.spec.label();
    auto it =
        std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == label; });
    if (it == groups.end()) it = groups.insert(groups.end(), {label, {}});
    it->second[r.spec.per_rank_batch].push_back(field(r));
  }
  return groups;
}

}  // namespace

std::vector<Series> error_series(const std::vector<RunResult>& results) {
  std::vector<Series> out;
  for (const auto& [label, by_batch] :
       group_by(results, [](const RunResult& r) { return 100.0 * r.test_error; })) {
    Series s;
    s.label = label;
    for (const auto& [batch, values] : by_batch) {
      s.per_rank_batches.push_back(batch);
      s.error_pct.push_back(mean_std(values));
    }
    out.push_back(s);
  }
  return out;
}

std::string results_markdown(const std::vector<RunResult>& results, const std::string& about) {
  std::set<int64_t> batches;
  std::map<int64_t, int64_t> global_batch;
  double total_wall = 0;
  for (const RunResult& r : results) {
    batches.insert(r.spec.per_rank_batch);
    global_batch[r.spec.per_rank_batch] = r.spec.global_batch();
    total_wall += r.wall_s;
  }
  const auto errors = group_by(results, [](const RunResult& r) { return 100.0 * r.test_error; });
  const auto speed = group_by(results, [](const RunResult& r) { return r.images_per_s; });
  const auto comm = group_by(results, [](const RunResult& r) { return r.sync_bn_comm_ms; });

  std::ostringstream md;
  md << "## Test error (%) vs per-rank batch size\n\n" << about << "\n\n";
  md << "Mean ± sample std over seeds (number of runs in parentheses).\n\n";
  md << "| per-rank batch | global batch |";
  for (const auto& g : errors) md << " " << g.first << " |";
  md << "\n| ---: | ---: |";
  for (size_t i = 0; i < errors.size(); ++i) md << " ---: |";
  md << "\n";
  char cell[96];
  for (int64_t b : batches) {
    md << "| " << b << " | " << global_batch[b] << " |";
    for (const auto& g : errors) {
      const auto it = g.second.find(b);
      if (it == g.second.end()) {
        md << " – |";
        continue;
      }
      const MeanStd m = mean_std(it->second);
      if (m.n > 1) {
        std::snprintf(cell, sizeof(cell), " %.2f ± %.2f (%d) |", m.mean, m.std, m.n);
      } else {
        std::snprintf(cell, sizeof(cell), " %.2f (1) |", m.mean);
      }
      md << cell;
    }
    md << "\n";
  }

  md << "\n## Throughput (images/s) and SyncBN communication (ms/step)\n\n";
  md << "Means over seeds; communication is rank 0's time inside the SyncBN allreduces per "
        "training step (forward and backward, all layers, waiting for slower ranks included).\n\n";
  md << "| per-rank batch |";
  size_t columns = 0;
  for (const auto& g : speed) md << " " << g.first << " img/s |", ++columns;
  for (const auto& g : comm) {
    if (g.first.rfind("syncbn", 0) == 0) md << " " << g.first << " comm ms/step |", ++columns;
  }
  md << "\n| ---: |";
  for (size_t i = 0; i < columns; ++i) md << " ---: |";
  md << "\n";
  for (int64_t b : batches) {
    md << "| " << b << " |";
    for (const auto& g : speed) {
      const auto it = g.second.find(b);
      if (it == g.second.end()) {
        md << " – |";
      } else {
        std::snprintf(cell, sizeof(cell), " %.0f |", mean_std(it->second).mean);
        md << cell;
      }
    }
    for (const auto& g : comm) {
      if (g.first.rfind("syncbn", 0) != 0) continue;
      const auto it = g.second.find(b);
      if (it == g.second.end()) {
        md << " – |";
      } else {
        std::snprintf(cell, sizeof(cell), " %.3f |", mean_std(it->second).mean);
        md << cell;
      }
    }
    md << "\n";
  }
  std::snprintf(cell, sizeof(cell), "%.1f", total_wall / 60.0);
  md << "\n" << results.size() << " runs, " << cell << " min of run time in total.\n";
  return md.str();
}

namespace {

std::string xml_escape(const std::string& text) {
  std::string out;
  for (char ch : text) {
    switch (ch) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += ch;
    }
  }
  return out;
}

// A round tick step (1, 2 or 5 × 10^k) giving about `target` ticks over `range`.
double nice_step(double range, int target) {
  const double raw = range / target;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0})
    if (m * magnitude >= raw) return m * magnitude;
  return 10.0 * magnitude;
}

std::string color_of(const std::string& label, size_t index) {
  if (label == "bn") return "#d62728";
  if (label == "syncbn") return "#1f77b4";
  if (label == "gn") return "#2ca02c";
  static const char* kOthers[] = {"#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
                                  "#7f7f7f", "#bcbd22", "#17becf"};
  return kOthers[index % (sizeof(kOthers) / sizeof(kOthers[0]))];
}

}  // namespace

std::string error_plot_svg(const std::vector<Series>& series, const std::string& title) {
  constexpr double kWidth = 760, kHeight = 480;
  constexpr double kLeft = 72, kRight = 150, kTop = 48, kBottom = 64;
  constexpr double kPlotW = kWidth - kLeft - kRight, kPlotH = kHeight - kTop - kBottom;

  int64_t min_batch = 0, max_batch = 0;
  double lo = INFINITY, hi = -INFINITY;
  for (const Series& s : series) {
    for (size_t i = 0; i < s.per_rank_batches.size(); ++i) {
      const int64_t b = s.per_rank_batches[i];
      min_batch = min_batch == 0 ? b : std::min(min_batch, b);
      max_batch = std::max(max_batch, b);
      lo = std::min(lo, s.error_pct[i].mean - s.error_pct[i].std);
      hi = std::max(hi, s.error_pct[i].mean + s.error_pct[i].std);
    }
  }
  if (max_batch == 0) min_batch = 1, max_batch = 1, lo = 0, hi = 100;
  const double x_lo = std::floor(std::log2(static_cast<double>(min_batch))) - 0.3;
  const double x_hi = std::ceil(std::log2(static_cast<double>(max_batch))) + 0.3;
  if (hi - lo < 1.0) lo -= 0.5, hi += 0.5;
  const double y_step = nice_step(hi - lo, 6);
  const double y_lo = std::max(0.0, std::floor(lo / y_step) * y_step);
  const double y_hi = std::ceil(hi / y_step) * y_step;
  auto px = [&](double batch) {
    return kLeft + (std::log2(batch) - x_lo) / (x_hi - x_lo) * kPlotW;
  };
  auto py = [&](double pct) { return kTop + (y_hi - pct) / (y_hi - y_lo) * kPlotH; };

  std::ostringstream svg;
  svg.setf(std::ios::fixed);
  svg.precision(2);
  svg << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kWidth << "\" height=\"" << kHeight
      << "\" viewBox=\"0 0 " << kWidth << " " << kHeight
      << "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"13\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << kLeft + kPlotW / 2 << "\" y=\"28\" text-anchor=\"middle\" "
      << "font-size=\"15\">" << xml_escape(title) << "</text>\n";

  // Grid, ticks and tick labels.
  svg << "<g class=\"grid\" stroke=\"#dddddd\" stroke-width=\"1\">\n";
  for (double y = y_lo; y <= y_hi + 1e-9 * y_step; y += y_step)
    svg << "<line x1=\"" << kLeft << "\" y1=\"" << py(y) << "\" x2=\"" << kLeft + kPlotW
        << "\" y2=\"" << py(y) << "\"/>\n";
  for (double k = std::ceil(x_lo); k <= x_hi; k += 1)
    svg << "<line x1=\"" << px(std::exp2(k)) << "\" y1=\"" << kTop << "\" x2=\"" << px(std::exp2(k))
        << "\" y2=\"" << kTop + kPlotH << "\"/>\n";
  svg << "</g>\n<g class=\"ticks\" fill=\"black\">\n";
  const int y_decimals = y_step >= 1 ? 0 : (y_step >= 0.1 ? 1 : 2);
  for (double y = y_lo; y <= y_hi + 1e-9 * y_step; y += y_step) {
    svg << "<line x1=\"" << kLeft - 5 << "\" y1=\"" << py(y) << "\" x2=\"" << kLeft << "\" y2=\""
        << py(y) << "\" stroke=\"black\"/>\n";
    char label[32];
    std::snprintf(label, sizeof(label), "%.*f", y_decimals, y);
    svg << "<text x=\"" << kLeft - 8 << "\" y=\"" << py(y) + 4 << "\" text-anchor=\"end\">" << label
        << "</text>\n";
  }
  for (double k = std::ceil(x_lo); k <= x_hi; k += 1) {
    const double x = px(std::exp2(k));
    svg << "<line x1=\"" << x << "\" y1=\"" << kTop + kPlotH << "\" x2=\"" << x << "\" y2=\""
        << kTop + kPlotH + 5 << "\" stroke=\"black\"/>\n"
        << "<text x=\"" << x << "\" y=\"" << kTop + kPlotH + 20 << "\" text-anchor=\"middle\">"
        << static_cast<int64_t>(std::llround(std::exp2(k))) << "</text>\n";
  }
  svg << "</g>\n"
      << "<rect x=\"" << kLeft << "\" y=\"" << kTop << "\" width=\"" << kPlotW << "\" height=\""
      << kPlotH << "\" fill=\"none\" stroke=\"black\"/>\n"
      << "<text x=\"" << kLeft + kPlotW / 2 << "\" y=\"" << kHeight - 18
      << "\" text-anchor=\"middle\">per-rank batch size (log2 scale)</text>\n"
      << "<text transform=\"translate(20 " << kTop + kPlotH / 2
      << ") rotate(-90)\" text-anchor=\"middle\">test error (%)</text>\n";

  // The series: error bars (±1 std), the line, markers; then the legend.
  for (size_t i = 0; i < series.size(); ++i) {
    const Series& s = series[i];
    const std::string color = color_of(s.label, i);
    const std::string label = xml_escape(s.label);
    svg << "<g class=\"errorbars\" data-label=\"" << label << "\" stroke=\"" << color
        << "\" stroke-width=\"1.2\">\n";
    for (size_t j = 0; j < s.per_rank_batches.size(); ++j) {
      const MeanStd& m = s.error_pct[j];
      if (m.std <= 0) continue;
      const double x = px(static_cast<double>(s.per_rank_batches[j]));
      const double y0 = py(m.mean - m.std), y1 = py(m.mean + m.std);
      svg << "<line x1=\"" << x << "\" y1=\"" << y0 << "\" x2=\"" << x << "\" y2=\"" << y1
          << "\"/><line x1=\"" << x - 4 << "\" y1=\"" << y0 << "\" x2=\"" << x + 4 << "\" y2=\""
          << y0 << "\"/><line x1=\"" << x - 4 << "\" y1=\"" << y1 << "\" x2=\"" << x + 4
          << "\" y2=\"" << y1 << "\"/>\n";
    }
    svg << "</g>\n<polyline class=\"series\" data-label=\"" << label << "\" fill=\"none\" stroke=\""
        << color << "\" stroke-width=\"2\" points=\"";
    for (size_t j = 0; j < s.per_rank_batches.size(); ++j)
      svg << (j ? " " : "") << px(static_cast<double>(s.per_rank_batches[j])) << ","
          << py(s.error_pct[j].mean);
    svg << "\"/>\n<g class=\"markers\" fill=\"" << color << "\">\n";
    for (size_t j = 0; j < s.per_rank_batches.size(); ++j)
      svg << "<circle cx=\"" << px(static_cast<double>(s.per_rank_batches[j])) << "\" cy=\""
          << py(s.error_pct[j].mean) << "\" r=\"3.5\"/>\n";
    svg << "</g>\n";
  }
  const double legend_x = kLeft + kPlotW + 16;
  svg << "<g class=\"legend\">\n";
  for (size_t i = 0; i < series.size(); ++i) {
    const double y = kTop + 12 + 22.0 * static_cast<double>(i);
    const std::string color = color_of(series[i].label, i);
    svg << "<line x1=\"" << legend_x << "\" y1=\"" << y << "\" x2=\"" << legend_x + 26 << "\" y2=\""
        << y << "\" stroke=\"" << color << "\" stroke-width=\"2\"/>"
        << "<circle cx=\"" << legend_x + 13 << "\" cy=\"" << y << "\" r=\"3.5\" fill=\"" << color
        << "\"/><text x=\"" << legend_x + 34 << "\" y=\"" << y + 4 << "\">"
        << xml_escape(series[i].label) << "</text>\n";
  }
  svg << "<text x=\"" << legend_x << "\" y=\"" << kTop + 12 + 22.0 * series.size() + 8
      << "\" font-size=\"11\" fill=\"#555555\">bars: ±1 std over seeds</text>\n";
  svg << "</g>\n</svg>\n";
  return svg.str();
}

void render_svg_to_png(const std::string& svg, const std::string& png_path, double scale) {
  GError* error = nullptr;
  std::unique_ptr<RsvgHandle, void (*)(gpointer)> handle(
      rsvg_handle_new_from_data(reinterpret_cast<const guint8*>(svg.data()), svg.size(), &error),
      g_object_unref);
  if (handle == nullptr) {
    const std::string message = error != nullptr ? error->message : "unknown error";
    if (error != nullptr) g_error_free(error);
    throw Error("cannot parse the SVG for '" + png_path + "': " + message);
  }
  gdouble width = 0, height = 0;
  SYNCBN_REQUIRE(rsvg_handle_get_intrinsic_size_in_pixels(handle.get(), &width, &height) &&
                     width > 0 && height > 0,
                 "the SVG for '", png_path, "' has no width and height in pixels");
  const int w = static_cast<int>(std::lround(width * scale));
  const int h = static_cast<int>(std::lround(height * scale));
  std::unique_ptr<cairo_surface_t, void (*)(cairo_surface_t*)> surface(
      cairo_image_surface_create(CAIRO_FORMAT_RGB24, w, h), cairo_surface_destroy);
  std::unique_ptr<cairo_t, void (*)(cairo_t*)> cr(cairo_create(surface.get()), cairo_destroy);
  cairo_set_source_rgb(cr.get(), 1, 1, 1);
  cairo_paint(cr.get());
  const RsvgRectangle viewport = {0, 0, static_cast<double>(w), static_cast<double>(h)};
  if (!rsvg_handle_render_document(handle.get(), cr.get(), &viewport, &error)) {
    const std::string message = error != nullptr ? error->message : "unknown error";
    if (error != nullptr) g_error_free(error);
    throw Error("cannot render the SVG for '" + png_path + "': " + message);
  }
  cairo_surface_flush(surface.get());
  const std::string tmp = png_path + ".tmp";
  const cairo_status_t status = cairo_surface_write_to_png(surface.get(), tmp.c_str());
  SYNCBN_REQUIRE(status == CAIRO_STATUS_SUCCESS, "cannot write '", tmp,
                 "': ", cairo_status_to_string(status));
  std::error_code ec;
  std::filesystem::rename(tmp, png_path, ec);
  SYNCBN_REQUIRE(!ec, "cannot rename '", tmp, "' to '", png_path, "': ", ec.message());
}

}  // namespace syncbn::study
