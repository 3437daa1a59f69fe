// The dashboard's words in English and Chinese; the choice is kept in localStorage.
export type Lang = "en" | "zh";

const WORDS = {
  title: { en: "cpnet — compute power network", zh: "cpnet 算力互联网" },
  signIn: { en: "Sign in", zh: "登录" },
  signOut: { en: "Sign out", zh: "退出" },
  token: { en: "API token", zh: "API 令牌" },
  tokenHelp: {
    en: "The same bearer token as the API and the CLI (cpnet login). A user sees their organisation's tasks; an admin sees all.",
    zh: "与 API 和命令行（cpnet login）相同的令牌。普通用户只能看到本组织的任务；管理员可以看到全部。",
  },
  badToken: { en: "The hub refused this token", zh: "中心拒绝了此令牌" },
  overview: { en: "Network", zh: "网络" },
  map: { en: "Sites on the map", zh: "站点分布" },
  mapNote: {
    en: "Province boundaries: Natural Earth (public domain); not a reviewed map of borders.",
    zh: "省级边界：Natural Earth（公有领域）；非审定地图。",
  },
  sitesOnline: { en: "Sites online", zh: "在线站点" },
  poolsOnline: { en: "Pools online", zh: "在线资源池" },
  cores: { en: "CPU cores reserved", zh: "已预留 CPU 核" },
  gpus: { en: "GPUs reserved", zh: "已预留 GPU" },
  queued: { en: "Queued", zh: "排队" },
  running: { en: "Running", zh: "运行" },
  complete: { en: "Complete", zh: "完成" },
  failed: { en: "Failed", zh: "失败" },
  canceled: { en: "Canceled", zh: "取消" },
  flow: { en: "Task flow per minute (last 30 min)", zh: "每分钟任务流（近 30 分钟）" },
  now: { en: "now", zh: "现在" },
  minutesAgo: { en: "30 min ago", zh: "30 分钟前" },
  perMinute: { en: "tasks / min", zh: "任务 / 分钟" },
  pools: { en: "Pools", zh: "资源池" },
  filter: { en: "Filter pools (name, site, type, region)", zh: "筛选资源池（名称、站点、类型、地区）" },
  onlineOnly: { en: "Online only", zh: "仅在线" },
  pool: { en: "Pool", zh: "资源池" },
  site: { en: "Site", zh: "站点" },
  type: { en: "Type", zh: "类型" },
  region: { en: "Region", zh: "地区" },
  load: { en: "Cores used", zh: "CPU 使用" },
  price: { en: "Price / core-hour", zh: "价格 / 核时" },
  reputation: { en: "Reputation", zh: "信誉" },
  state: { en: "State", zh: "状态" },
  online: { en: "online", zh: "在线" },
  offline: { en: "offline", zh: "离线" },
  tasks: { en: "Recent tasks", zh: "最近任务" },
  task: { en: "Task", zh: "任务" },
  created: { en: "Created", zh: "创建时间" },
  events: { en: "Events", zh: "事件" },
  attempts: { en: "Attempts", zh: "尝试" },
  logs: { en: "Logs", zh: "日志" },
  placement: { en: "Placement", zh: "调度说明" },
  back: { en: "← Network", zh: "← 网络" },
  live: { en: "live", zh: "实时" },
  reconnecting: { en: "reconnecting…", zh: "重新连接…" },
  none: { en: "none yet", zh: "暂无" },
  notFound: { en: "No such task (or not yours)", zh: "任务不存在（或无权查看）" },
  account: { en: "Account", zh: "账户" },
  scu: { en: "SCU / hour", zh: "SCU / 小时" },
  transfers: { en: "Data moved", zh: "数据传输" },
  direction: { en: "Direction", zh: "方向" },
  bytes: { en: "Bytes", zh: "字节" },
  verified: { en: "sha256 verified", zh: "sha256 已校验" },
  providers: { en: "Providers", zh: "提供方" },
  evidence: { en: "Evidence", zh: "依据" },
  notScored: { en: "not scored yet (the hub's SLA sweep scores pools periodically)", zh: "尚未评分（中心定期评估资源池）" },
  success: { en: "success", zh: "成功率" },
  availability: { en: "availability", zh: "可用性" },
  breaches: { en: "SLA breaches", zh: "SLA 违约" },
  balance: { en: "Balance", zh: "余额" },
  held: { en: "Held for tasks", zh: "任务冻结" },
  available: { en: "Available", zh: "可用" },
  earned: { en: "Earned as a provider", zh: "作为提供方收入" },
  bill: { en: "Bill", zh: "账单" },
  billOf: { en: "This month's bill", zh: "本月账单" },
  charge: { en: "Charge", zh: "费用" },
  seconds: { en: "Seconds", zh: "秒" },
  hourly: { en: "Per hour", zh: "每小时" },
  total: { en: "Total charged", zh: "合计" },
  ledger: { en: "Ledger (operator)", zh: "账本（运营方）" },
  ledgerOk: { en: "balanced", zh: "平衡" },
  ledgerBad: { en: "PROBLEMS", zh: "有问题" },
} as const;

export type Word = keyof typeof WORDS;

let lang: Lang = (localStorage.getItem("cpnet.lang") as Lang) || (navigator.language.startsWith("zh") ? "zh" : "en");

export function t(w: Word): string {
  return WORDS[w][lang];
}

export function currentLang(): Lang {
  return lang;
}

export function setLang(l: Lang): void {
  lang = l;
  localStorage.setItem("cpnet.lang", l);
  document.documentElement.lang = l === "zh" ? "zh-CN" : "en";
}
