//! NLTK's Porter stemmer (`nltk.stem.porter.PorterStemmer()`, the default
//! `NLTK_EXTENSIONS` mode), which `rouge_score` and NLTK's METEOR use. It departs from the
//! 1980 paper where NLTK does (a table of irregular forms, `-ies`/`-ied` on four-letter
//! words, `y`→`i` only after a consonant, `-alli`, `-fulli`, `-logi`), so stems match NLTK's.

/// Irregular forms mapped straight to their stem, bypassing the rules.
const IRREGULAR: &[(&str, &str)] = &[
    ("sky", "sky"),
    ("skies", "sky"),
    ("dying", "die"),
    ("lying", "lie"),
    ("tying", "tie"),
    ("news", "news"),
    ("innings", "inning"),
    ("inning", "inning"),
    ("outings", "outing"),
    ("outing", "outing"),
    ("cannings", "canning"),
    ("canning", "canning"),
    ("howe", "howe"),
    ("proceed", "proceed"),
    ("exceed", "exceed"),
    ("succeed", "succeed"),
];

type Word = Vec<char>;

fn is_vowel(c: char) -> bool {
    matches!(c, 'a' | 'e' | 'i' | 'o' | 'u')
}

/// Consonant flags: `y` is a consonant at the start or after a vowel.
fn consonant_flags(word: &[char]) -> Vec<bool> {
    let mut flags: Vec<bool> = Vec::with_capacity(word.len());
    for (i, &c) in word.iter().enumerate() {
        let flag = if is_vowel(c) {
            false
        } else if c == 'y' {
            i == 0 || !flags[i - 1]
        } else {
            true
        };
        flags.push(flag);
    }
    flags
}

fn is_consonant(word: &[char], i: usize) -> bool {
    consonant_flags(&word[..=i])[i]
}

/// The paper's measure m: the number of vowel-consonant transitions.
fn measure(stem: &[char]) -> usize {
    consonant_flags(stem)
        .windows(2)
        .filter(|w| !w[0] && w[1])
        .count()
}

fn contains_vowel(stem: &[char]) -> bool {
    consonant_flags(stem).iter().any(|&c| !c)
}

/// Condition *d: ends with a double consonant.
fn ends_double_consonant(word: &[char]) -> bool {
    let n = word.len();
    n >= 2 && word[n - 1] == word[n - 2] && is_consonant(word, n - 1)
}

/// Condition *o: ends consonant-vowel-consonant, the last not w, x or y; NLTK also accepts
/// a two-letter vowel-consonant word.
fn ends_cvc(word: &[char]) -> bool {
    let n = word.len();
    (n >= 3
        && is_consonant(word, n - 3)
        && !is_consonant(word, n - 2)
        && is_consonant(word, n - 1)
        && !matches!(word[n - 1], 'w' | 'x' | 'y'))
        || (n == 2 && !is_consonant(word, 0) && is_consonant(word, 1))
}

fn ends_with(word: &[char], suffix: &str) -> bool {
    let suffix: Vec<char> = suffix.chars().collect();
    word.ends_with(&suffix)
}

fn strip(word: &[char], suffix: &str) -> Word {
    word[..word.len() - suffix.chars().count()].to_vec()
}

fn join(stem: &[char], replacement: &str) -> Word {
    stem.iter().copied().chain(replacement.chars()).collect()
}

/// A suffix rule's condition on the stem left after removing the suffix.
enum Condition<'a> {
    Always,
    PositiveMeasure,
    MeasureAbove1,
    Custom(&'a dyn Fn(&[char]) -> bool),
}

impl Condition<'_> {
    fn holds(&self, stem: &[char]) -> bool {
        match self {
            Condition::Always => true,
            Condition::PositiveMeasure => measure(stem) > 0,
            Condition::MeasureAbove1 => measure(stem) > 1,
            Condition::Custom(f) => f(stem),
        }
    }
}

/// The suffix "*d" stands for any double consonant.
const DOUBLE_CONSONANT: &str = "*d";

/// Applies the first rule whose suffix the word ends with (NLTK's `_apply_rule_list`): a
/// matching suffix ends the search whether its condition holds or not.
fn apply_rules(word: &[char], rules: &[(&str, &str, Condition)]) -> Word {
    for (suffix, replacement, condition) in rules {
        if *suffix == DOUBLE_CONSONANT && ends_double_consonant(word) {
            let stem = &word[..word.len() - 2];
            return if condition.holds(stem) {
                join(stem, replacement)
            } else {
                word.to_vec()
            };
        }
        if ends_with(word, suffix) {
            let stem = strip(word, suffix);
            return if condition.holds(&stem) {
                join(&stem, replacement)
            } else {
                word.to_vec()
            };
        }
    }
    word.to_vec()
}

fn step1a(word: &[char]) -> Word {
    if ends_with(word, "ies") && word.len() == 4 {
        return join(&strip(word, "ies"), "ie");
    }
    use Condition::Always;
    apply_rules(
        word,
        &[
            ("sses", "ss", Always),
            ("ies", "i", Always),
            ("ss", "ss", Always),
            ("s", "", Always),
        ],
    )
}

fn step1b(word: &[char]) -> Word {
    if ends_with(word, "ied") {
        let replacement = if word.len() == 4 { "ie" } else { "i" };
        return join(&strip(word, "ied"), replacement);
    }
    if ends_with(word, "eed") {
        let stem = strip(word, "eed");
        return if measure(&stem) > 0 {
            join(&stem, "ee")
        } else {
            word.to_vec()
        };
    }
    let Some(stem) = ["ed", "ing"]
        .iter()
        .filter(|s| ends_with(word, s))
        .map(|s| strip(word, s))
        .find(|stem| contains_vowel(stem))
    else {
        return word.to_vec();
    };
    let last = stem.last().copied().unwrap_or(' ');
    let last_string = last.to_string();
    let keeps_double = |_: &[char]| !matches!(last, 'l' | 's' | 'z');
    let short_cvc = |s: &[char]| measure(s) == 1 && ends_cvc(s);
    apply_rules(
        &stem,
        &[
            ("at", "ate", Condition::Always),
            ("bl", "ble", Condition::Always),
            ("iz", "ize", Condition::Always),
            (
                DOUBLE_CONSONANT,
                last_string.as_str(),
                Condition::Custom(&keeps_double),
            ),
            ("", "e", Condition::Custom(&short_cvc)),
        ],
    )
}

fn step1c(word: &[char]) -> Word {
    let after_consonant = |stem: &[char]| stem.len() > 1 && is_consonant(stem, stem.len() - 1);
    apply_rules(word, &[("y", "i", Condition::Custom(&after_consonant))])
}

fn step2(word: &[char]) -> Word {
    if ends_with(word, "alli") && measure(&strip(word, "alli")) > 0 {
        return step2(&join(&strip(word, "alli"), "al"));
    }
    use Condition::PositiveMeasure as M;
    // NLTK's -logi rule measures the stem with its `l`.
    let logi_stem = word[..word.len().saturating_sub(3)].to_vec();
    let logi = move |_: &[char]| measure(&logi_stem) > 0;
    apply_rules(
        word,
        &[
            ("ational", "ate", M),
            ("tional", "tion", M),
            ("enci", "ence", M),
            ("anci", "ance", M),
            ("izer", "ize", M),
            ("bli", "ble", M),
            ("alli", "al", M),
            ("entli", "ent", M),
            ("eli", "e", M),
            ("ousli", "ous", M),
            ("ization", "ize", M),
            ("ation", "ate", M),
            ("ator", "ate", M),
            ("alism", "al", M),
            ("iveness", "ive", M),
            ("fulness", "ful", M),
            ("ousness", "ous", M),
            ("aliti", "al", M),
            ("iviti", "ive", M),
            ("biliti", "ble", M),
            ("fulli", "ful", M),
            ("logi", "log", Condition::Custom(&logi)),
        ],
    )
}

fn step3(word: &[char]) -> Word {
    use Condition::PositiveMeasure as M;
    apply_rules(
        word,
        &[
            ("icate", "ic", M),
            ("ative", "", M),
            ("alize", "al", M),
            ("iciti", "ic", M),
            ("ical", "ic", M),
            ("ful", "", M),
            ("ness", "", M),
        ],
    )
}

fn step4(word: &[char]) -> Word {
    use Condition::MeasureAbove1 as M;
    let ion = |stem: &[char]| measure(stem) > 1 && matches!(stem.last(), Some('s' | 't'));
    apply_rules(
        word,
        &[
            ("al", "", M),
            ("ance", "", M),
            ("ence", "", M),
            ("er", "", M),
            ("ic", "", M),
            ("able", "", M),
            ("ible", "", M),
            ("ant", "", M),
            ("ement", "", M),
            ("ment", "", M),
            ("ent", "", M),
            ("ion", "", Condition::Custom(&ion)),
            ("ou", "", M),
            ("ism", "", M),
            ("ate", "", M),
            ("iti", "", M),
            ("ous", "", M),
            ("ive", "", M),
            ("ize", "", M),
        ],
    )
}

fn step5a(word: &[char]) -> Word {
    if ends_with(word, "e") {
        let stem = strip(word, "e");
        let m = measure(&stem);
        if m > 1 || (m == 1 && !ends_cvc(&stem)) {
            return stem;
        }
    }
    word.to_vec()
}

fn step5b(word: &[char]) -> Word {
    let without_last = word[..word.len().saturating_sub(1)].to_vec();
    let long = move |_: &[char]| measure(&without_last) > 1;
    apply_rules(word, &[("ll", "l", Condition::Custom(&long))])
}

/// The stem of `word` (lowercased first), as NLTK's `PorterStemmer().stem(word)`.
pub fn stem(word: &str) -> String {
    let lower = word.to_lowercase();
    if let Some((_, stem)) = IRREGULAR.iter().find(|(form, _)| *form == lower) {
        return (*stem).to_string();
    }
    if word.chars().count() <= 2 {
        return lower;
    }
    let w: Word = lower.chars().collect();
    let w = step1a(&w);
    let w = step1b(&w);
    let w = step1c(&w);
    let w = step2(&w);
    let w = step3(&w);
    let w = step4(&w);
    let w = step5a(&w);
    let w = step5b(&w);
    w.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::stem;

    #[test]
    fn stems_the_papers_examples() {
        for (word, expected) in [
            ("caresses", "caress"),
            ("ponies", "poni"),
            ("ties", "tie"),
            ("cats", "cat"),
            ("agreed", "agre"),
            ("plastered", "plaster"),
            ("motoring", "motor"),
            ("hopping", "hop"),
            ("falling", "fall"),
            ("filing", "file"),
            ("happy", "happi"),
            ("relational", "relat"),
            ("generalization", "gener"),
            ("skies", "sky"),
            ("controll", "control"),
        ] {
            assert_eq!(stem(word), expected, "{word}");
        }
    }
}
