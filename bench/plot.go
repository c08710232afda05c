package bench

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// writePlots draws, for each backend with hot-key results, critical
// sections per second, hand-offs per second and the hand-off latency p50
// against the number of contenders.
func writePlots(r *Results, dir string) error {
	plot.DefaultFont = font.Font{Typeface: "Liberation", Variant: "Sans"}
	for _, b := range r.Backends {
		if len(b.hot) == 0 {
			continue
		}
		name := b.backend.name
		err := linePlot(filepath.Join(dir, "hotkey-throughput-"+name+".png"), b,
			b.backend.title+": critical sections per second (higher is better)",
			"critical sections / s", false,
			func(h *hotResult) (float64, bool) { return h.perSec(), h.err == nil })
		if err != nil {
			return err
		}
		err = linePlot(filepath.Join(dir, "hotkey-handoffs-"+name+".png"), b,
			b.backend.title+": hand-offs per second (higher is better)",
			"grants to another contender / s", false,
			func(h *hotResult) (float64, bool) { return h.handoffsPerSec(), h.err == nil })
		if err != nil {
			return err
		}
		err = linePlot(filepath.Join(dir, "hotkey-handoff-"+name+".png"), b,
			b.backend.title+": hand-off latency p50 (lower is better)",
			"ms (log scale)", true,
			func(h *hotResult) (float64, bool) {
				ms := float64(h.handoffP50) / float64(time.Millisecond)
				return ms, h.err == nil && h.handoffs > 0 && ms > 0
			})
		if err != nil {
			return err
		}
	}
	return nil
}

// Colours and marker shapes, one per subject in the backend's order; dlock
// first, in strong colours.
var (
	plotColors = []color.Color{
		color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}, // red
		color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}, // orange
		color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, // blue
		color.RGBA{R: 0x17, G: 0xbe, B: 0xcf, A: 0xff}, // cyan
		color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}, // green
		color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff}, // purple
		color.RGBA{R: 0x8c, G: 0x56, B: 0x4b, A: 0xff}, // brown
		color.RGBA{R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff}, // grey
	}
	plotShapes = []draw.GlyphDrawer{
		draw.CircleGlyph{}, draw.SquareGlyph{}, draw.TriangleGlyph{}, draw.PlusGlyph{},
		draw.CrossGlyph{}, draw.RingGlyph{}, draw.BoxGlyph{}, draw.PyramidGlyph{},
	}
)

func linePlot(path string, b *BackendResults, title, ylabel string, logY bool, value func(*hotResult) (float64, bool)) error {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(13)
	p.X.Label.Text = "contenders"
	p.Y.Label.Text = ylabel
	p.X.Scale = plot.LogScale{}
	var ticks []plot.Tick
	for _, n := range b.contenderCounts() {
		ticks = append(ticks, plot.Tick{Value: float64(n), Label: strconv.Itoa(n)})
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	if len(ticks) > 0 {
		p.X.Min, p.X.Max = ticks[0].Value/1.2, ticks[len(ticks)-1].Value*1.2
	}
	if logY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	p.Add(plotter.NewGrid())
	// The legend goes in a band below the plot, so that no line hides
	// behind it.
	leg := plot.NewLegend()
	leg.Top = true
	leg.Left = true
	leg.TextStyle.Font.Size = vg.Points(10)
	leg.Padding = vg.Points(4)
	entries := 0
	for i, s := range b.hotSubjects() {
		var pts plotter.XYs
		for _, n := range b.contenderCounts() {
			h := b.findHot(s, n)
			if h == nil {
				continue
			}
			if v, ok := value(h); ok {
				pts = append(pts, plotter.XY{X: float64(n), Y: v})
				lo, hi = min(lo, v), max(hi, v)
			}
		}
		if len(pts) == 0 {
			continue
		}
		line, points, err := plotter.NewLinePoints(pts)
		if err != nil {
			return err
		}
		c := plotColors[i%len(plotColors)]
		line.Color = c
		line.Width = vg.Points(1.5)
		if s.role == roleDlock {
			line.Width = vg.Points(2.5)
		} else {
			line.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
		}
		points.Color = c
		points.Shape = plotShapes[i%len(plotShapes)]
		points.Radius = vg.Points(3.5)
		p.Add(line, points)
		leg.Add(legendLabel(s), line, points)
		entries++
	}
	switch {
	case hi < lo: // nothing to draw
	case logY:
		p.Y.Min, p.Y.Max = lo/3, hi*3
	default:
		p.Y.Min, p.Y.Max = 0, hi*1.1
	}
	const width, plotHeight = 8 * vg.Inch, 4.5 * vg.Inch
	legendHeight := vg.Length(entries)*vg.Points(14) + vg.Points(8)
	img := vgimg.NewWith(vgimg.UseWH(width, plotHeight+legendHeight), vgimg.UseDPI(110))
	dc := draw.New(img)
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	p.Draw(draw.Crop(dc, 0, 0, legendHeight, 0))
	legendArea := draw.Crop(dc, vg.Points(60), 0, vg.Points(6), -(plotHeight))
	leg.Draw(legendArea)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	return f.Close()
}

// legendLabel is a subject's label made short enough for a legend.
func legendLabel(s *subject) string {
	switch s.id {
	case "redsync-tuned", "redislock-tuned":
		return s.name + " (tuned: exponential backoff " + tunedMin.String() + "→" + tunedMax.String() + ")"
	case "redislock":
		return s.name + " (LinearBackoff 100ms, as documented)"
	case "redsync":
		return s.name + " (defaults: 32 tries, 50–250 ms apart)"
	case "sqltable":
		return s.name + " (polls every 100 ms)"
	case "dlock", "dlock-shared":
		return s.name
	default:
		return s.name + " (defaults)"
	}
}
