//! One prompt's beam search bookkeeping, with `transformers`' semantics (`_beam_search`):
//! candidate selection, finished hypotheses, length penalty and the three early-stopping
//! rules. The model runs elsewhere: [`BeamPrompt::advance`] takes the next-token logits of
//! the running beams and says which beam continues with which token, so decoder-only and
//! encoder-decoder models, one beam per pass or all prompts' beams in one batch, share it.

use super::config::{EarlyStopping, GenerationConfig};
use super::logits::{self, LogitsProcessor};
use super::search::StopStrings;
use crate::error::Result;

/// A running beam: its tokens (prompt included) and summed log-probability.
#[derive(Debug, Clone)]
pub(super) struct RunningBeam {
    pub(super) ids: Vec<u32>,
    pub(super) score: f32,
}

/// The beams of one prompt.
pub(super) struct BeamPrompt<'a> {
    cfg: &'a GenerationConfig,
    proc: &'a LogitsProcessor<'a>,
    stop: &'a StopStrings<'a>,
    prompt_len: usize,
    max_len: usize,
    pub(super) running: Vec<RunningBeam>,
    finished: Vec<(Vec<u32>, f32)>,
    improvable: bool,
    cur_len: usize,
}

impl<'a> BeamPrompt<'a> {
    /// `num_beams` beams that all start as `prompt` (of `prompt_len` tokens, the length
    /// new tokens count from); only the first counts at the first step (the others start
    /// at -1e9 so the first step does not pick the same continuation `num_beams` times).
    pub(super) fn new(
        prompt: &[u32],
        cfg: &'a GenerationConfig,
        proc: &'a LogitsProcessor<'a>,
        stop: &'a StopStrings<'a>,
        max_len: usize,
    ) -> Self {
        let running = (0..cfg.num_beams)
            .map(|i| RunningBeam {
                ids: prompt.to_vec(),
                score: if i == 0 { 0.0 } else { -1e9 },
            })
            .collect();
        Self {
            cfg,
            proc,
            stop,
            prompt_len: prompt.len(),
            max_len,
            running,
            finished: Vec::new(),
            improvable: true,
            cur_len: prompt.len(),
        }
    }

    /// One step: `step_logits[b]` are the next-token logits of running beam `b`. Returns the
    /// new running beams as `(parent beam, token)` in order, or `None` when the prompt is
    /// done (its hypotheses are final).
    pub(super) fn advance(
        &mut self,
        step_logits: &[Vec<f32>],
    ) -> Result<Option<Vec<(usize, u32)>>> {
        let cfg = self.cfg;
        let num_beams = cfg.num_beams;
        // Enough candidates that `num_beams` of them continue even if each beam's best
        // continuations are end-of-sequence tokens.
        let keep = (1 + cfg.eos_token_id.len()).max(2) * num_beams;
        let lp = cfg.length_penalty;
        // Candidates: (accumulated log-prob, beam, token).
        let vocab = step_logits.first().map_or(0, Vec::len);
        let mut cand: Vec<(f32, usize, u32)> = Vec::with_capacity(num_beams * vocab);
        for (b, beam) in self.running.iter().enumerate() {
            let mut lp_row = logits::log_softmax(&step_logits[b]);
            self.proc.process(&beam.ids, &mut lp_row);
            cand.extend(
                lp_row
                    .iter()
                    .enumerate()
                    .map(|(t, &s)| (s + beam.score, b, t as u32)),
            );
        }
        // Best first; ties keep the lower flat index, as a stable top-k would.
        let by_score = |a: &(f32, usize, u32), b: &(f32, usize, u32)| b.0.total_cmp(&a.0);
        if cand.len() > keep {
            cand.select_nth_unstable_by(keep - 1, |a, b| {
                by_score(a, b).then((a.1, a.2).cmp(&(b.1, b.2)))
            });
            cand.truncate(keep);
        }
        cand.sort_by(|a, b| by_score(a, b).then((a.1, a.2).cmp(&(b.1, b.2))));
        let mut hits = Vec::with_capacity(cand.len());
        for &(_, b, t) in &cand {
            let mut ids = self.running[b].ids.clone();
            ids.push(t);
            let hit = cfg.eos_token_id.contains(&t)
                || self.cur_len + 1 >= self.max_len
                || self.stop.hit(&ids[self.prompt_len..])?;
            hits.push(hit);
        }
        // Finished hypotheses: only the top `num_beams` candidates may enter, and only while
        // the prompt is not done.
        let full = self.finished.len() == num_beams;
        if self.improvable && !(full && cfg.early_stopping == EarlyStopping::Done) {
            let denom = ((self.cur_len + 1 - self.prompt_len) as f64).powf(lp) as f32;
            let mut merged = self.finished.clone();
            for (r, &(s, b, t)) in cand.iter().enumerate().take(num_beams) {
                if hits[r] {
                    let mut ids = self.running[b].ids.clone();
                    ids.push(t);
                    merged.push((ids, s / denom));
                }
            }
            // Stable: earlier hypotheses win ties, as in `transformers`' merge.
            merged.sort_by(|a, b| b.1.total_cmp(&a.1));
            merged.truncate(num_beams);
            self.finished = merged;
        }
        if hits.iter().all(|&h| h) {
            return Ok(None);
        }
        // Next running beams: the best candidates that did not stop (stopped ones follow,
        // pushed down by 1e9, as in `transformers`, should too few remain).
        let mut order: Vec<usize> = (0..cand.len()).collect();
        order.sort_by(|&a, &b| {
            let sa = cand[a].0 - if hits[a] { 1e9 } else { 0.0 };
            let sb = cand[b].0 - if hits[b] { 1e9 } else { 0.0 };
            sb.total_cmp(&sa).then(a.cmp(&b))
        });
        let mut next = Vec::with_capacity(num_beams);
        let mut chosen = Vec::with_capacity(num_beams);
        for &r in order.iter().take(num_beams) {
            let (s, b, t) = cand[r];
            let mut ids = self.running[b].ids.clone();
            ids.push(t);
            next.push(RunningBeam {
                ids,
                score: s - if hits[r] { 1e9 } else { 0.0 },
            });
            chosen.push((b, t));
        }
        self.running = next;
        self.cur_len += 1;
        // Can a running beam still beat the worst finished hypothesis?
        if self.improvable && self.finished.len() == num_beams {
            let hyp_len = if cfg.early_stopping == EarlyStopping::Never && lp > 0.0 {
                self.max_len - self.prompt_len
            } else {
                self.cur_len - self.prompt_len
            };
            let best = self.running[0].score / (hyp_len as f64).powf(lp) as f32;
            let worst = self
                .finished
                .iter()
                .map(|f| f.1)
                .fold(f32::INFINITY, f32::min);
            self.improvable = best > worst;
        }
        let done_early =
            self.finished.len() == num_beams && cfg.early_stopping == EarlyStopping::Done;
        if !self.improvable || done_early {
            return Ok(None);
        }
        Ok(Some(chosen))
    }

    /// The finished hypotheses, best first (the running beams if none finished, which the
    /// last step prevents in practice).
    pub(super) fn into_hypotheses(self) -> Vec<(Vec<u32>, f32)> {
        if !self.finished.is_empty() {
            return self.finished;
        }
        let lp = self.cfg.length_penalty;
        self.running
            .into_iter()
            .map(|b| {
                let n = (b.ids.len() - self.prompt_len) as f64;
                (b.ids, b.score / n.powf(lp) as f32)
            })
            .collect()
    }
}

/// Lays hypotheses out as `transformers` returns them: rows cut to the longest one, shorter
/// ones filled with `pad_token_id or eos_token_id[0]` (Python's `or`: a pad id of 0 counts
/// as unset).
pub(super) fn pad_hypotheses(
    all: Vec<(Vec<u32>, f32)>,
    cfg: &GenerationConfig,
    min_width: usize,
) -> (Vec<Vec<u32>>, Vec<f32>) {
    let width = all.iter().map(|(s, _)| s.len()).max().unwrap_or(min_width);
    let fill = match cfg.eos_token_id.first() {
        Some(&e) => cfg.pad_token_id.filter(|&p| p != 0).unwrap_or(e),
        None => cfg.pad_token_id.unwrap_or(0),
    };
    all.into_iter()
        .map(|(mut s, score)| {
            s.resize(width, fill);
            (s, score)
        })
        .unzip()
}
