//! Which of a server's tools its clients may see and call: allow and deny
//! lists of globs (`*` any run of characters, `?` one character), from a
//! server's `tools` block in the config file. A tool is visible when it
//! matches some allow glob (or there is no allow list) and no deny glob.
//! Applying the filter (dropping hidden tools from `tools/list` results,
//! refusing `tools/call` on them) is the session core's; this module only
//! decides, and rewrites one `tools/list` result.

use serde_json::Value;

/// A server's tool allow and deny lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolFilter {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

impl ToolFilter {
    /// True when the filter hides nothing.
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// May clients see and call the tool `name`?
    pub fn allows(&self, name: &str) -> bool {
        let allowed = self.allow.is_empty() || self.allow.iter().any(|glob| matches(glob, name));
        allowed && !self.deny.iter().any(|glob| matches(glob, name))
    }

    /// A `tools/list` response with the hidden tools taken out of
    /// `result.tools`, re-serialised; `None` when it hides nothing from this
    /// response (it is then forwarded as received) or is not one.
    pub fn filter_list_response(&self, response: &[u8]) -> Option<Vec<u8>> {
        if self.is_open() {
            return None;
        }
        let mut value: Value = serde_json::from_slice(response).ok()?;
        let tools = value.get_mut("result")?.get_mut("tools")?.as_array_mut()?;
        let before = tools.len();
        tools.retain(|tool| {
            tool.get("name")
                .and_then(Value::as_str)
                .is_none_or(|name| self.allows(name))
        });
        (tools.len() != before).then(|| serde_json::to_vec(&value).ok())?
    }
}

/// The tool a `tools/call` request names, read from its raw bytes.
pub fn called_tool(request: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Params {
        name: String,
    }
    #[derive(serde::Deserialize)]
    struct Call {
        params: Params,
    }
    serde_json::from_slice::<Call>(request)
        .ok()
        .map(|call| call.params.name)
}

/// Glob matching with `*` and `?`, byte-wise on the characters.
pub fn matches(glob: &str, text: &str) -> bool {
    let glob: Vec<char> = glob.chars().collect();
    let text: Vec<char> = text.chars().collect();
    // Iterative matching with one backtrack point for the last `*`.
    let (mut g, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match glob.get(g) {
            Some('*') => {
                star = Some((g, t));
                g += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                g += 1;
                t += 1;
            }
            _ => match star {
                Some((star_g, star_t)) => {
                    g = star_g + 1;
                    t = star_t + 1;
                    star = Some((star_g, star_t + 1));
                }
                None => return false,
            },
        }
    }
    glob[g..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(matches("*", ""));
        assert!(matches("get-*", "get-sum"));
        assert!(!matches("get-*", "echo"));
        assert!(matches("*-sum", "get-sum"));
        assert!(matches("g?t-*m", "get-sum"));
        assert!(matches("a*b*c", "axxbyyc"));
        assert!(!matches("a*b*c", "axxbyy"));
        assert!(matches("echo", "echo"));
        assert!(!matches("echo", "echo2"));
    }

    #[test]
    fn allow_and_deny() {
        let open = ToolFilter::default();
        assert!(open.allows("anything"));
        let filter = ToolFilter {
            allow: vec!["get-*".into(), "echo".into()],
            deny: vec!["get-env".into()],
        };
        assert!(filter.allows("echo"));
        assert!(filter.allows("get-sum"));
        assert!(!filter.allows("get-env"));
        assert!(!filter.allows("trigger-sampling-request"));
    }

    #[test]
    fn list_results_lose_hidden_tools() {
        let filter = ToolFilter {
            allow: Vec::new(),
            deny: vec!["secret*".into()],
        };
        let response = br#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"echo"},{"name":"secret-a"}],"nextCursor":"x"}}"#;
        let filtered = filter.filter_list_response(response).expect("rewritten");
        let value: Value = serde_json::from_slice(&filtered).unwrap();
        assert_eq!(value["result"]["tools"].as_array().unwrap().len(), 1);
        assert_eq!(value["result"]["tools"][0]["name"], "echo");
        assert_eq!(value["result"]["nextCursor"], "x");
        assert_eq!(value["id"], 3);
        let nothing_hidden = br#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"echo"}]}}"#;
        assert_eq!(filter.filter_list_response(nothing_hidden), None);
        assert_eq!(filter.filter_list_response(b"not json"), None);
    }

    #[test]
    fn the_called_tool_is_read_from_the_request() {
        let call = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get-sum","arguments":{}}}"#;
        assert_eq!(called_tool(call).as_deref(), Some("get-sum"));
        assert_eq!(called_tool(b"{}"), None);
    }
}
