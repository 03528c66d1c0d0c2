//! Reading the last message of a request body without keeping the others.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, de::MapAccess};

/// The last element of a request's `messages` (`None` when it is empty,
/// `null` or absent). Earlier messages are read and dropped as they come:
/// nothing of them is kept.
#[derive(Debug, Default)]
pub(crate) struct LastMessage<'a>(pub(crate) Option<Message<'a>>);

/// One message: who said it, its text, and DeepSeek's and Mistral's
/// `prefix` flag.
#[derive(Debug, Deserialize)]
pub(crate) struct Message<'a> {
    #[serde(borrow, default)]
    pub(crate) role: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) content: Option<Text<'a>>,
    #[serde(default)]
    pub(crate) prefix: Option<bool>,
}

/// The text of a message's `content`: the string itself, or the `text` of
/// each `{"type":"text"}` block joined (Anthropic's and OpenAI's block
/// lists; other blocks carry no text to continue).
#[derive(Debug)]
pub(crate) struct Text<'a>(pub(crate) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for LastMessage<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Last;

        impl<'de> Visitor<'de> for Last {
            type Value = LastMessage<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of messages")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut last = None;
                while let Some(message) = seq.next_element::<Message<'de>>()? {
                    last = Some(message);
                }
                Ok(LastMessage(last))
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(LastMessage(None))
            }
        }

        deserializer.deserialize_any(Last)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Content;

        impl<'de> Visitor<'de> for Content {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of content blocks")
            }

            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(text)))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }

            fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(text)))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut joined: Option<Cow<'de, str>> = None;
                while let Some(block) = seq.next_element::<Block<'de>>()? {
                    let Some(text) = block.text() else { continue };
                    joined = Some(match joined {
                        None => text,
                        Some(before) => Cow::Owned(before.into_owned() + &text),
                    });
                }
                Ok(Text(joined.unwrap_or_default()))
            }
        }

        deserializer.deserialize_any(Content)
    }
}

/// A content block: only a text block's `text` matters.
#[derive(Debug)]
struct Block<'a> {
    text: Option<Cow<'a, str>>,
    is_text: bool,
}

impl<'a> Block<'a> {
    fn text(self) -> Option<Cow<'a, str>> {
        self.text.filter(|_| self.is_text)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Block<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;

        impl<'de> Visitor<'de> for Fields {
            type Value = Block<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a content block")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut block = Block {
                    text: None,
                    is_text: false,
                };
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    match key.as_ref() {
                        "type" => block.is_text = map.next_value::<Text<'de>>()?.0 == "text",
                        "text" => block.text = map.next_value::<Option<Text<'de>>>()?.map(|t| t.0),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(block)
            }
        }

        deserializer.deserialize_map(Fields)
    }
}
