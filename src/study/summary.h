// The study's summaries of results.csv: statistics over seeds, the Markdown table and the plot
// (SVG, and PNG rendered from it).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "study/results_csv.h"

namespace syncbn::study {

// Mean and sample standard deviation (n − 1; 0 for a single value).
struct MeanStd {
  double mean = 0;
  double std = 0;
  int n = 0;
};
MeanStd mean_std(const std::vector<double>& values);

// One line of the plot: test error (in %) per per-rank batch, over seeds.
struct Series {
  std::string label;
  std::vector<int64_t> per_rank_batches;  // ascending
  std::vector<MeanStd> error_pct;
};
// Series in order of first appearance of their label in results.
std::vector<Series> error_series(const std::vector<RunResult>& results);

// results.md: test error mean ± std per norm × per-rank batch, then throughput and SyncBN
// communication time. `about` is a line describing the study.
std::string results_markdown(const std::vector<RunResult>& results, const std::string& about);
// The plot: log2 x axis (per-rank batch), test error (%) on y, error bars of one std, legend.
// Every series is one <polyline class="series" data-label="...">.
std::string error_plot_svg(const std::vector<Series>& series, const std::string& title);
// Renders SVG text to a PNG file (librsvg + cairo) at `scale` times its size, white background.
void render_svg_to_png(const std::string& svg, const std::string& png_path, double scale = 2.0);

}  // namespace syncbn::study
