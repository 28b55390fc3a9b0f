//! `ferroformer generate` (continue a prompt, streamed) and `ferroformer chat` (the model's
//! chat template, one turn or an interactive conversation).

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context};
use ferroformer::generation::{
    fit_to_context, generate_ids, generate_stream_cached, GenerationConfig, LanguageModel,
    PromptCache, StopReason, TextStreamer, Truncation,
};
use ferroformer::models::{ChatMessage, ChatTemplate};

use crate::device_arg::{load_language_model, DeviceArgs};
use crate::generation_args::StreamingArgs;

/// Arguments of `ferroformer generate`.
#[derive(clap::Args)]
pub struct GenerateArgs {
    /// Run directory or checkpoint (config.json, model.safetensors, tokenizer.json), a
    /// `.gguf` file, or a hub id of either (a GGUF repository holding one file).
    #[arg(long)]
    pub model: String,
    /// Prompt text (tokenized with the model's special tokens, e.g. BOS, as `transformers`
    /// and llama.cpp do).
    pub prompt: String,
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(flatten)]
    pub generation: StreamingArgs,
}

/// The system message `chat` opens with when `--system` is not given.
pub const DEFAULT_SYSTEM_MESSAGE: &str = "You are a helpful assistant.";

/// Arguments of `ferroformer chat`.
#[derive(clap::Args)]
pub struct ChatArgs {
    /// A chat model: checkpoint directory, `.gguf` file, or hub id of either. Its chat
    /// template comes from the GGUF metadata or the checkpoint's chat_template.jinja /
    /// tokenizer_config.json.
    #[arg(long)]
    pub model: String,
    /// The system message opening the conversation. Default: "You are a helpful
    /// assistant." (small instruct models answer far better with one), left out for
    /// templates that refuse system messages.
    #[arg(long)]
    pub system: Option<String>,
    /// No system message: the template decides (some write their own default one), as
    /// `transformers`' `apply_chat_template` does with the user's messages alone.
    #[arg(long, conflicts_with = "system")]
    pub no_system: bool,
    /// Answer this one message and exit; without it, chat on stdin (an empty line or end of
    /// input ends, `/reset` starts over).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Print the rendered prompt (the template's output) on stderr before each answer.
    #[arg(long)]
    pub show_prompt: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(flatten)]
    pub generation: StreamingArgs,
}

/// A causal LM ready to generate, loaded by the library's one loader (see
/// [`load_language_model`]), with the CLI's context fitting on top.
struct LoadedLm(LanguageModel);

impl std::ops::Deref for LoadedLm {
    type Target = LanguageModel;

    fn deref(&self) -> &LanguageModel {
        &self.0
    }
}

impl LoadedLm {
    /// Loads `model` onto `--device`.
    fn load(model: &str, device: &DeviceArgs) -> anyhow::Result<Self> {
        Ok(Self(load_language_model(model, device)?))
    }

    fn defaults(&self) -> &GenerationConfig {
        self.model.generation_config()
    }

    fn context(&self) -> usize {
        self.context_length()
    }

    /// Fits `prompt` into the context for `cfg`'s new tokens: drops its first tokens with
    /// `--truncate left` (saying so on stderr) and caps the new tokens at what fits. Returns
    /// the prompt to use and the config with the new-token limit that applies.
    fn fit<'p>(
        &self,
        prompt: &'p [u32],
        cfg: &GenerationConfig,
        truncation: Truncation,
    ) -> anyhow::Result<(&'p [u32], GenerationConfig, bool)> {
        let wanted = cfg
            .max_total_length(prompt.len())
            .saturating_sub(prompt.len());
        let fit = fit_to_context(prompt.len(), wanted, self.context(), truncation)?;
        if fit.skip > 0 {
            eprintln!(
                "note: the prompt has {} tokens and the model's context {}: kept its last {} \
                 (--truncate left)",
                prompt.len(),
                self.context(),
                prompt.len() - fit.skip
            );
        }
        let mut cfg = cfg.clone();
        cfg.max_new_tokens = Some(fit.max_new_tokens);
        Ok((&prompt[fit.skip..], cfg, fit.shortened(wanted)))
    }
}

/// Whether `cfg` can stream (one sequence, no beams).
fn streams(cfg: &GenerationConfig) -> bool {
    cfg.num_beams == 1 && cfg.num_return_sequences == 1
}

/// Generates from `prompt`, streaming the text through `streamer` to stdout when `cfg`
/// allows; beam search and several sequences are generated whole, then printed (separated by
/// blank lines). Returns each sequence's new tokens (without a final end of sequence) and
/// whether the first stopped at the length limit.
fn run_and_print(
    lm: &LoadedLm,
    prompt: &[u32],
    cfg: &GenerationConfig,
    mut streamer: TextStreamer,
    between: &str,
    cache: Option<&mut PromptCache>,
) -> anyhow::Result<(Vec<Vec<u32>>, bool)> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if streams(cfg) {
        let mut fresh;
        let cache = match cache {
            Some(c) => c,
            None => {
                fresh = PromptCache::new(lm.decoder());
                &mut fresh
            }
        };
        let o = generate_stream_cached(
            lm.decoder(),
            cache,
            prompt,
            cfg,
            Some(lm.tokenizer.inner()),
            |id| {
                let piece = streamer.push(id)?;
                if !piece.is_empty() {
                    write!(out, "{piece}")
                        .and_then(|_| out.flush())
                        .map_err(ferroformer::Error::Io)?;
                }
                Ok(true)
            },
        )?;
        let full = o.stop_reason == StopReason::Length;
        return Ok((vec![o.tokens_without_eos().to_vec()], full));
    }
    let result = generate_ids(
        lm.decoder(),
        &[prompt.to_vec()],
        None,
        cfg,
        Some(lm.tokenizer.inner()),
    )?;
    let mut all = Vec::new();
    let mut full = false;
    for i in 0..result.sequences.len() {
        let mut tokens = result.new_tokens(i).to_vec();
        if tokens.last().is_some_and(|t| cfg.eos_token_id.contains(t)) {
            tokens.pop();
        } else if i == 0 {
            full = true;
        }
        if i > 0 {
            write!(out, "{between}")?;
        }
        // The streamer's text, as streaming would have printed it.
        let mut s = streamer.clone();
        for &t in &tokens {
            write!(out, "{}", s.push(t)?)?;
        }
        all.push(tokens);
    }
    out.flush()?;
    Ok((all, full))
}

/// Runs `ferroformer generate`.
pub fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let lm = LoadedLm::load(&args.model, &args.device)?;
    let cfg = args.generation.config(lm.defaults())?;
    let truncation = args.generation.options.truncation()?;
    let prompt = lm
        .tokenizer
        .encode(&args.prompt, true)
        .context("cannot tokenize the prompt")?;
    if prompt.is_empty() {
        bail!("the prompt is empty: give some text to continue");
    }
    let (prompt, cfg, capped) = lm.fit(&prompt, &cfg, truncation)?;
    let streamer = TextStreamer::new(lm.tokenizer.inner(), prompt)?;
    {
        let mut out = std::io::stdout().lock();
        write!(out, "{}", args.prompt)?;
        out.flush()?;
    }
    let between = format!("\n\n{}", args.prompt);
    let (_, full) = run_and_print(&lm, prompt, &cfg, streamer, &between, None)?;
    println!();
    if full && capped {
        eprintln!(
            "(stopped: the model's context of {} tokens is full)",
            lm.context()
        );
    }
    Ok(())
}

/// Runs `ferroformer chat`.
pub fn chat(args: ChatArgs) -> anyhow::Result<()> {
    let lm = LoadedLm::load(&args.model, &args.device)?;
    let template = lm
        .chat_template()
        .with_context(|| format!("`{}` cannot chat", args.model))?;
    let mut cfg = args.generation.config(lm.defaults())?;
    if cfg.num_return_sequences > 1 {
        bail!(
            "invalid generation option: `num_return_sequences`: a chat keeps one answer per \
             turn, found {}",
            cfg.num_return_sequences
        );
    }
    // Stop at the end of the assistant's turn too (`<|im_end|>`, `<|eot_id|>`, ...).
    for marker in template.end_of_turn_markers() {
        if let Some(id) = lm.tokenizer.inner().token_to_id(marker) {
            if !cfg.eos_token_id.contains(&id) {
                cfg.eos_token_id.push(id);
            }
        }
    }
    if cfg.eos_token_id.is_empty() {
        eprintln!(
            "note: the model names no end-of-sequence token: answers run to --max-new-tokens"
        );
    }
    let truncation = args.generation.options.truncation()?;
    let system = match (&args.system, args.no_system) {
        (Some(s), _) => Some(s.clone()),
        (None, true) => None,
        // The default system message, unless the template refuses system messages.
        (None, false) => {
            let probe = [
                ChatMessage::system(DEFAULT_SYSTEM_MESSAGE),
                ChatMessage::user("Hi"),
            ];
            match template.render(&probe, true) {
                Err(_) if template.render(&probe[1..], true).is_ok() => None,
                _ => Some(DEFAULT_SYSTEM_MESSAGE.to_string()),
            }
        }
    };
    let mut history: Vec<ChatMessage> = system.into_iter().map(ChatMessage::system).collect();
    // The conversation's keys and values, kept between turns: each turn runs the model on
    // the new messages only (after /reset, the system message is still reused).
    let mut cache = PromptCache::new(lm.decoder());
    let turn = |history: &mut Vec<ChatMessage>,
                cache: &mut PromptCache,
                user: &str|
     -> anyhow::Result<()> {
        history.push(ChatMessage::user(user));
        let answer = answer(
            &lm,
            &template,
            history,
            &cfg,
            truncation,
            args.show_prompt,
            cache,
        );
        match answer {
            Ok(text) => {
                history.push(ChatMessage::assistant(text));
                Ok(())
            }
            Err(e) => {
                history.pop();
                Err(e)
            }
        }
    };
    if let Some(prompt) = &args.prompt {
        return turn(&mut history, &mut cache, prompt);
    }
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    if interactive {
        eprintln!(
            "chatting with {} (empty line or Ctrl-D ends, /reset starts over)",
            args.model
        );
    }
    let mut lines = stdin.lock().lines();
    loop {
        eprint!("> ");
        std::io::stderr().flush()?;
        let Some(line) = lines.next() else {
            eprintln!();
            return Ok(());
        };
        let line = line.context("reading stdin")?;
        let user = line.trim_end_matches(['\r', '\n']);
        if user.trim().is_empty() {
            return Ok(());
        }
        if user.trim() == "/reset" {
            history.retain(|m| m.role == "system");
            eprintln!("(conversation cleared)");
            continue;
        }
        if let Err(e) = turn(&mut history, &mut cache, user) {
            if !interactive {
                return Err(e);
            }
            eprintln!("error: {e:#}\n(the message was dropped; /reset starts over)");
        }
    }
}

/// Renders the conversation with the generation prompt, streams the assistant's answer to
/// stdout, and returns its text (without the end-of-turn token).
fn answer(
    lm: &LoadedLm,
    template: &ChatTemplate,
    history: &[ChatMessage],
    cfg: &GenerationConfig,
    truncation: Truncation,
    show_prompt: bool,
    cache: &mut PromptCache,
) -> anyhow::Result<String> {
    let text = template.render(history, true)?;
    if show_prompt {
        eprintln!("{text}");
    }
    // As `apply_chat_template(tokenize=True)`: the template writes the special tokens it
    // wants (BOS included), none are added.
    let ids = lm
        .tokenizer
        .encode(&text, false)
        .context("cannot tokenize the rendered conversation")?;
    let (ids, cfg, capped) = lm.fit(&ids, cfg, truncation)?;
    // Only the answer is decoded (as `transformers`' TextStreamer with skip_prompt), its
    // special tokens left out.
    let streamer = TextStreamer::with_options(lm.tokenizer.inner(), &[], true)?;
    let (answers, full) = run_and_print(lm, ids, &cfg, streamer, "", Some(cache))?;
    println!();
    if show_prompt && streams(&cfg) {
        eprintln!(
            "({} of the {} prompt tokens were cached from earlier turns)",
            cache.reused(),
            ids.len()
        );
    }
    if full && capped {
        eprintln!(
            "(stopped: the model's context of {} tokens is full)",
            lm.context()
        );
    }
    let tokens = answers.into_iter().next().unwrap_or_default();
    Ok(lm.tokenizer.decode(&tokens, true)?)
}
