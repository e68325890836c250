/*! Switchboard web chat widget. One tag: <script async src=".../widget.js" data-key="..."></script>
 * Docs: docs/webchat-widget.md. Plain ES2020, no dependencies, talks only to the install it was loaded from. */
(() => {
  'use strict';
  const doc = document;
  const tag = doc.currentScript ||
    [...doc.querySelectorAll('script[data-key]')].find((s) => /widget\.js([?#]|$)/.test(s.src));
  if (!tag || doc.getElementById('switchboard-widget') || window.Switchboard) return;
  const D = tag.dataset;
  const KEY = D.key;
  if (!KEY) return;
  const SRC = new URL(tag.src, location.href);
  const ORIGIN = SRC.origin;
  const API = ORIGIN + '/api/webchat/v1/';
  const WS = (SRC.protocol === 'https:' ? 'wss://' : 'ws://') + SRC.host + '/ws/webchat/';
  const P = 'switchboard:' + KEY + ':';

  // UI strings: one '|'-separated line per language, in the order of K
  const K = 'title ph send close open reply offline emailPh emailBtn thanks queue typing netOff reconn queued failed retry big type many rate preTitle name email start new attach'.split(' ');
  const L = {
    en: "Chat with us|Type a message…|Send|Close chat|Open chat|We usually reply in a few minutes|No one is online right now. Leave your email and we'll answer there.|Your email|Continue by email|Thanks! We'll answer by email.|You're number {n} in line — about {m} min|Agent is typing…|You're offline|Reconnecting…|Not sent yet|Not sent.|Retry|This file is too large (max {m} MB).|This file type is not allowed.|You can attach up to {n} files.|You're sending messages too fast. Sending again in {s} s.|Before we start|Name|Email|Start chat|New conversation|Attach a file",
    es: "Chatea con nosotros|Escribe un mensaje…|Enviar|Cerrar chat|Abrir chat|Solemos responder en pocos minutos|Ahora no hay nadie conectado. Déjanos tu correo y te responderemos allí.|Tu correo|Continuar por correo|¡Gracias! Te responderemos por correo.|Eres el número {n} en la cola — unos {m} min|El agente está escribiendo…|Estás sin conexión|Reconectando…|Aún no enviado|No enviado.|Reintentar|El archivo es demasiado grande (máx. {m} MB).|Este tipo de archivo no está permitido.|Puedes adjuntar hasta {n} archivos.|Estás enviando mensajes demasiado rápido. Se reenviará en {s} s.|Antes de empezar|Nombre|Correo electrónico|Iniciar chat|Nueva conversación|Adjuntar archivo",
    fr: "Discutez avec nous|Écrivez un message…|Envoyer|Fermer le chat|Ouvrir le chat|Nous répondons généralement en quelques minutes|Personne n'est en ligne pour le moment. Laissez votre e-mail et nous vous répondrons par ce biais.|Votre e-mail|Continuer par e-mail|Merci ! Nous vous répondrons par e-mail.|Vous êtes n° {n} dans la file — environ {m} min|Un agent écrit…|Vous êtes hors ligne|Reconnexion…|Pas encore envoyé|Non envoyé.|Réessayer|Fichier trop volumineux (max. {m} Mo).|Ce type de fichier n'est pas autorisé.|Vous pouvez joindre jusqu'à {n} fichiers.|Vous envoyez des messages trop vite. Nouvel envoi dans {s} s.|Avant de commencer|Nom|E-mail|Démarrer le chat|Nouvelle conversation|Joindre un fichier",
    de: "Chatten Sie mit uns|Nachricht schreiben…|Senden|Chat schließen|Chat öffnen|Wir antworten meist innerhalb weniger Minuten|Gerade ist niemand online. Hinterlassen Sie Ihre E-Mail-Adresse, dann antworten wir dort.|Ihre E-Mail-Adresse|Per E-Mail fortfahren|Danke! Wir antworten per E-Mail.|Sie sind Nr. {n} in der Warteschlange — etwa {m} Min.|Ein Mitarbeiter schreibt…|Sie sind offline|Verbindung wird wiederhergestellt…|Noch nicht gesendet|Nicht gesendet.|Erneut versuchen|Die Datei ist zu groß (max. {m} MB).|Dieser Dateityp ist nicht erlaubt.|Sie können bis zu {n} Dateien anhängen.|Sie senden zu schnell. Erneuter Versand in {s} s.|Bevor es losgeht|Name|E-Mail|Chat starten|Neues Gespräch|Datei anhängen",
    pt: "Fale conosco|Escreva uma mensagem…|Enviar|Fechar chat|Abrir chat|Costumamos responder em poucos minutos|Não há ninguém online agora. Deixe seu e-mail e responderemos por lá.|Seu e-mail|Continuar por e-mail|Obrigado! Responderemos por e-mail.|Você é o número {n} na fila — cerca de {m} min|O atendente está digitando…|Você está offline|Reconectando…|Ainda não enviada|Não enviada.|Tentar novamente|O arquivo é grande demais (máx. {m} MB).|Este tipo de arquivo não é permitido.|Você pode anexar até {n} arquivos.|Você está enviando mensagens rápido demais. Novo envio em {s} s.|Antes de começar|Nome|E-mail|Iniciar chat|Nova conversa|Anexar arquivo",
    it: "Chatta con noi|Scrivi un messaggio…|Invia|Chiudi chat|Apri chat|Di solito rispondiamo in pochi minuti|Al momento non c'è nessuno online. Lasciaci la tua email e ti risponderemo lì.|La tua email|Continua via email|Grazie! Ti risponderemo via email.|Sei il numero {n} in coda — circa {m} min|L'operatore sta scrivendo…|Sei offline|Riconnessione…|Non ancora inviato|Non inviato.|Riprova|Il file è troppo grande (max {m} MB).|Questo tipo di file non è consentito.|Puoi allegare fino a {n} file.|Stai inviando messaggi troppo velocemente. Nuovo invio tra {s} s.|Prima di iniziare|Nome|Email|Inizia la chat|Nuova conversazione|Allega un file",
    nl: "Chat met ons|Typ een bericht…|Verzenden|Chat sluiten|Chat openen|We reageren meestal binnen enkele minuten|Er is nu niemand online. Laat je e-mailadres achter, dan antwoorden we daar.|Je e-mailadres|Verder via e-mail|Bedankt! We antwoorden per e-mail.|Je bent nummer {n} in de rij — ongeveer {m} min|Medewerker is aan het typen…|Je bent offline|Opnieuw verbinden…|Nog niet verzonden|Niet verzonden.|Opnieuw proberen|Dit bestand is te groot (max. {m} MB).|Dit bestandstype is niet toegestaan.|Je kunt maximaal {n} bestanden bijvoegen.|Je verstuurt berichten te snel. Opnieuw verzenden over {s} s.|Voordat we beginnen|Naam|E-mail|Chat starten|Nieuw gesprek|Bestand bijvoegen",
    ru: "Напишите нам|Введите сообщение…|Отправить|Закрыть чат|Открыть чат|Обычно мы отвечаем в течение нескольких минут|Сейчас никого нет в сети. Оставьте свой email, и мы ответим туда.|Ваш email|Продолжить по почте|Спасибо! Мы ответим по email.|Вы {n}-й в очереди — примерно {m} мин|Оператор печатает…|Вы не в сети|Переподключение…|Ещё не отправлено|Не отправлено.|Повторить|Файл слишком большой (макс. {m} МБ).|Этот тип файлов не разрешён.|Можно прикрепить не более {n} файлов.|Вы отправляете сообщения слишком часто. Повторная отправка через {s} с.|Перед началом|Имя|Email|Начать чат|Новый диалог|Прикрепить файл",
    uk: "Напишіть нам|Введіть повідомлення…|Надіслати|Закрити чат|Відкрити чат|Зазвичай ми відповідаємо протягом кількох хвилин|Зараз нікого немає в мережі. Залиште свій email, і ми відповімо туди.|Ваш email|Продовжити поштою|Дякуємо! Ми відповімо на email.|Ви {n}-й у черзі — приблизно {m} хв|Оператор друкує…|Ви не в мережі|Повторне підключення…|Ще не надіслано|Не надіслано.|Повторити|Файл завеликий (макс. {m} МБ).|Цей тип файлів не дозволено.|Можна прикріпити не більше {n} файлів.|Ви надсилаєте повідомлення надто часто. Повторне надсилання через {s} с.|Перш ніж почати|Ім'я|Email|Почати чат|Нова розмова|Прикріпити файл",
    pl: "Napisz do nas|Napisz wiadomość…|Wyślij|Zamknij czat|Otwórz czat|Zwykle odpowiadamy w ciągu kilku minut|Nikogo nie ma teraz online. Zostaw swój e-mail, a odpowiemy na niego.|Twój e-mail|Kontynuuj przez e-mail|Dziękujemy! Odpowiemy e-mailem.|Jesteś {n}. w kolejce — około {m} min|Konsultant pisze…|Jesteś offline|Ponowne łączenie…|Jeszcze nie wysłano|Nie wysłano.|Ponów|Plik jest za duży (maks. {m} MB).|Ten typ pliku jest niedozwolony.|Możesz dołączyć maksymalnie {n} plików.|Wysyłasz wiadomości zbyt szybko. Ponowna wysyłka za {s} s.|Zanim zaczniemy|Imię|E-mail|Rozpocznij czat|Nowa rozmowa|Załącz plik",
    tr: "Bize yazın|Bir mesaj yazın…|Gönder|Sohbeti kapat|Sohbeti aç|Genellikle birkaç dakika içinde yanıt veririz|Şu anda kimse çevrimiçi değil. E-posta adresinizi bırakın, size oradan yanıt verelim.|E-posta adresiniz|E-postayla devam et|Teşekkürler! Size e-postayla yanıt vereceğiz.|Sırada {n}. kişisiniz — yaklaşık {m} dk|Temsilci yazıyor…|Çevrimdışısınız|Yeniden bağlanılıyor…|Henüz gönderilmedi|Gönderilemedi.|Tekrar dene|Dosya çok büyük (en fazla {m} MB).|Bu dosya türüne izin verilmiyor.|En fazla {n} dosya ekleyebilirsiniz.|Çok hızlı mesaj gönderiyorsunuz. {s} sn sonra yeniden gönderilecek.|Başlamadan önce|Adınız|E-posta|Sohbeti başlat|Yeni sohbet|Dosya ekle",
    ar: "تحدث معنا|اكتب رسالة…|إرسال|إغلاق المحادثة|فتح المحادثة|نرد عادةً خلال دقائق قليلة|لا يوجد أحد متصل الآن. اترك بريدك الإلكتروني وسنرد عليك هناك.|بريدك الإلكتروني|المتابعة عبر البريد|شكرًا! سنرد عليك عبر البريد الإلكتروني.|أنت رقم {n} في قائمة الانتظار — حوالي {m} دقيقة|الموظف يكتب…|أنت غير متصل|جارٍ إعادة الاتصال…|لم تُرسل بعد|لم تُرسل.|إعادة المحاولة|الملف كبير جدًا (الحد الأقصى {m} ميغابايت).|هذا النوع من الملفات غير مسموح.|يمكنك إرفاق {n} ملفات كحد أقصى.|أنت ترسل الرسائل بسرعة كبيرة. ستتم إعادة الإرسال بعد {s} ث.|قبل أن نبدأ|الاسم|البريد الإلكتروني|بدء المحادثة|محادثة جديدة|إرفاق ملف",
    fa: "با ما گفتگو کنید|پیامی بنویسید…|ارسال|بستن گفتگو|باز کردن گفتگو|معمولاً ظرف چند دقیقه پاسخ می‌دهیم|الان کسی آنلاین نیست. ایمیل خود را بگذارید تا از همان‌جا پاسخ دهیم.|ایمیل شما|ادامه از طریق ایمیل|متشکریم! از طریق ایمیل پاسخ می‌دهیم.|شما نفر {n} در صف هستید — حدود {m} دقیقه|پشتیبان در حال نوشتن است…|شما آفلاین هستید|در حال اتصال دوباره…|هنوز ارسال نشده|ارسال نشد.|تلاش دوباره|فایل خیلی بزرگ است (حداکثر {m} مگابایت).|این نوع فایل مجاز نیست.|حداکثر {n} فایل می‌توانید پیوست کنید.|پیام‌ها را خیلی سریع می‌فرستید. ارسال دوباره تا {s} ثانیه دیگر.|پیش از شروع|نام|ایمیل|شروع گفتگو|گفتگوی جدید|پیوست فایل",
    he: "שוחחו איתנו|כתבו הודעה…|שליחה|סגירת הצ'אט|פתיחת הצ'אט|בדרך כלל אנחנו עונים תוך כמה דקות|אין כרגע אף אחד מחובר. השאירו כתובת מייל ונענה לכם שם.|כתובת המייל שלכם|המשך במייל|תודה! נענה לכם במייל.|אתם מספר {n} בתור — בערך {m} דק'|נציג מקליד…|אין חיבור לאינטרנט|מתחבר מחדש…|עדיין לא נשלחה|לא נשלחה.|נסו שוב|הקובץ גדול מדי (עד {m} MB).|סוג הקובץ הזה אינו מותר.|אפשר לצרף עד {n} קבצים.|אתם שולחים הודעות מהר מדי. שליחה חוזרת בעוד {s} שנ'.|לפני שמתחילים|שם|מייל|התחלת צ'אט|שיחה חדשה|צירוף קובץ",
    ur: "ہم سے بات کریں|پیغام لکھیں…|بھیجیں|چیٹ بند کریں|چیٹ کھولیں|ہم عام طور پر چند منٹوں میں جواب دیتے ہیں|اس وقت کوئی آن لائن نہیں ہے۔ اپنا ای میل چھوڑ دیں، ہم وہیں جواب دیں گے۔|آپ کا ای میل|ای میل پر جاری رکھیں|شکریہ! ہم ای میل پر جواب دیں گے۔|قطار میں آپ کا نمبر {n} ہے — تقریباً {m} منٹ|ایجنٹ لکھ رہا ہے…|آپ آف لائن ہیں|دوبارہ جڑ رہا ہے…|ابھی نہیں بھیجا گیا|نہیں بھیجا جا سکا۔|دوبارہ کوشش کریں|فائل بہت بڑی ہے (زیادہ سے زیادہ {m} MB)۔|اس قسم کی فائل کی اجازت نہیں ہے۔|آپ زیادہ سے زیادہ {n} فائلیں منسلک کر سکتے ہیں۔|آپ بہت تیزی سے پیغامات بھیج رہے ہیں۔ {s} سیکنڈ میں دوبارہ بھیجا جائے گا۔|شروع کرنے سے پہلے|نام|ای میل|چیٹ شروع کریں|نئی گفتگو|فائل منسلک کریں",
    zh: "与我们聊天|输入消息…|发送|关闭聊天|打开聊天|我们通常会在几分钟内回复|目前没有人在线。请留下您的邮箱，我们会通过邮件回复您。|您的邮箱|通过邮件继续|谢谢！我们会通过邮件回复。|您排在第 {n} 位 — 约 {m} 分钟|客服正在输入…|您已离线|正在重新连接…|尚未发送|发送失败。|重试|文件太大（最大 {m} MB）。|不允许此类型的文件。|最多可附加 {n} 个文件。|您发送消息太快了。将在 {s} 秒后重新发送。|开始之前|姓名|邮箱|开始聊天|新对话|附加文件",
    ja: "チャットでお問い合わせ|メッセージを入力…|送信|チャットを閉じる|チャットを開く|通常数分以内に返信します|現在オンラインの担当者がいません。メールアドレスを残していただければ、メールで返信します。|メールアドレス|メールで続ける|ありがとうございます！メールで返信します。|{n} 番目にお待ちいただいています — 約 {m} 分|担当者が入力中…|オフラインです|再接続中…|未送信|送信できませんでした。|再試行|ファイルが大きすぎます（最大 {m} MB）。|この種類のファイルは使用できません。|添付できるファイルは {n} 個までです。|送信が速すぎます。{s} 秒後に再送信します。|始める前に|お名前|メールアドレス|チャットを開始|新しい会話|ファイルを添付",
    ko: "채팅 상담|메시지를 입력하세요…|보내기|채팅 닫기|채팅 열기|보통 몇 분 안에 답변드립니다|지금은 온라인 상담원이 없습니다. 이메일을 남겨 주시면 이메일로 답변드리겠습니다.|이메일 주소|이메일로 계속하기|감사합니다! 이메일로 답변드리겠습니다.|대기 순서 {n}번 — 약 {m}분|상담원이 입력 중…|오프라인 상태입니다|다시 연결 중…|아직 전송되지 않음|전송되지 않았습니다.|다시 시도|파일이 너무 큽니다(최대 {m}MB).|허용되지 않는 파일 형식입니다.|파일은 최대 {n}개까지 첨부할 수 있습니다.|메시지를 너무 빨리 보내고 있습니다. {s}초 후에 다시 보냅니다.|시작하기 전에|이름|이메일|채팅 시작|새 대화|파일 첨부",
    vi: "Trò chuyện với chúng tôi|Nhập tin nhắn…|Gửi|Đóng trò chuyện|Mở trò chuyện|Chúng tôi thường trả lời trong vài phút|Hiện không có ai trực tuyến. Hãy để lại email, chúng tôi sẽ trả lời qua đó.|Email của bạn|Tiếp tục qua email|Cảm ơn! Chúng tôi sẽ trả lời qua email.|Bạn đang ở vị trí {n} trong hàng chờ — khoảng {m} phút|Nhân viên đang nhập…|Bạn đang ngoại tuyến|Đang kết nối lại…|Chưa gửi|Không gửi được.|Thử lại|Tệp quá lớn (tối đa {m} MB).|Loại tệp này không được phép.|Bạn có thể đính kèm tối đa {n} tệp.|Bạn gửi tin nhắn quá nhanh. Sẽ gửi lại sau {s} giây.|Trước khi bắt đầu|Tên|Email|Bắt đầu trò chuyện|Cuộc trò chuyện mới|Đính kèm tệp",
    hi: "हमसे चैट करें|संदेश लिखें…|भेजें|चैट बंद करें|चैट खोलें|हम आमतौर पर कुछ ही मिनटों में जवाब देते हैं|अभी कोई ऑनलाइन नहीं है। अपना ईमेल छोड़ें, हम वहीं जवाब देंगे।|आपका ईमेल|ईमेल से जारी रखें|धन्यवाद! हम ईमेल से जवाब देंगे।|कतार में आपका नंबर {n} है — लगभग {m} मिनट|एजेंट लिख रहा है…|आप ऑफ़लाइन हैं|फिर से कनेक्ट हो रहा है…|अभी भेजा नहीं गया|नहीं भेजा गया।|फिर कोशिश करें|फ़ाइल बहुत बड़ी है (अधिकतम {m} MB)।|इस प्रकार की फ़ाइल की अनुमति नहीं है।|आप अधिकतम {n} फ़ाइलें जोड़ सकते हैं।|आप बहुत तेज़ी से संदेश भेज रहे हैं। {s} सेकंड में फिर से भेजा जाएगा।|शुरू करने से पहले|नाम|ईमेल|चैट शुरू करें|नई बातचीत|फ़ाइल जोड़ें",
    id: "Chat dengan kami|Tulis pesan…|Kirim|Tutup chat|Buka chat|Kami biasanya membalas dalam beberapa menit|Saat ini tidak ada yang online. Tinggalkan email Anda dan kami akan membalas ke sana.|Email Anda|Lanjutkan lewat email|Terima kasih! Kami akan membalas lewat email.|Anda nomor {n} dalam antrean — sekitar {m} menit|Agen sedang mengetik…|Anda sedang offline|Menyambungkan ulang…|Belum terkirim|Tidak terkirim.|Coba lagi|File terlalu besar (maks. {m} MB).|Jenis file ini tidak diizinkan.|Anda dapat melampirkan maksimal {n} file.|Anda mengirim pesan terlalu cepat. Dikirim ulang dalam {s} dtk.|Sebelum mulai|Nama|Email|Mulai chat|Percakapan baru|Lampirkan file",
  };
  const wanted = [D.lang, ...(navigator.languages || [navigator.language])].filter(Boolean)
    .map((l) => String(l).toLowerCase().split(/[-_]/)[0]);
  const lang = wanted.find((l) => L[l]) || 'en';
  const dir = /^(ar|fa|he|ur)$/.test(lang) ? 'rtl' : 'ltr';
  const en = L.en.split('|');
  const t = {};
  L[lang].split('|').forEach((s, i) => { t[K[i]] = s || en[i]; });
  const fmt = (s, o) => s.replace(/\{(\w)\}/g, (_, k) => o[k]);

  // Storage (localStorage may be missing or full: then the widget works for this page only)
  const mem = {};
  const get = (k) => { try { return localStorage.getItem(P + k); } catch (e) { return mem[k] ?? null; } };
  const put = (k, v) => {
    mem[k] = v;
    try { v == null ? localStorage.removeItem(P + k) : localStorage.setItem(P + k, v); } catch (e) { /* memory */ }
  };
  const outbox = () => { try { return JSON.parse(get('outbox')) || []; } catch (e) { return []; } };
  const setOutbox = (list) => put('outbox', list.length ? JSON.stringify(list) : null);
  const unqueue = (cid) => { const o = outbox(); const n = o.filter((i) => i.client_id !== cid); if (n.length < o.length) setOutbox(n); };
  const uuid = () => (crypto.randomUUID ? crypto.randomUUID()
    : '10000000-1000-4000-8000-100000000000'.replace(/[018]/g, (c) => (c ^ (crypto.getRandomValues(new Uint8Array(1))[0] & (15 >> (c / 4)))).toString(16)));
  const online = () => navigator.onLine !== false;

  // State
  let cfg, token = get('token'), ws = null, ready = false, tries = 0, everDown = false, lastId = 0;
  let sessionP = null, holdUntil = 0, flushing = false, again = false, statusAsked = false, contacted = false;
  let isOpen = false, wantOpen = false, built = false, st = {};
  const who = { name: D.name || '', email: D.email || '' };
  const byId = new Map(), byCid = new Map(), pending = new Map(), timers = {};
  const later = (name, fn, ms) => { clearTimeout(timers[name]); timers[name] = setTimeout(fn, ms); };
  // A token issued for another signed-in user (or for an anonymous visitor before sign-in) is not reused.
  if (token && (get('user') || '') !== (D.userId || '')) { token = null; put('token', null); put('outbox', null); }

  // HTTP
  async function api(path, opt = {}) {
    const headers = {};
    let body = opt.form;
    if (opt.auth !== false) headers.Authorization = 'Bearer ' + token;
    if (opt.body) { headers['Content-Type'] = 'application/json'; body = JSON.stringify(opt.body); }
    const r = await fetch(API + path, { method: opt.method || 'GET', headers, body, credentials: 'omit' });
    let data = {};
    try { data = await r.json(); } catch (e) { /* not JSON */ }
    const wait = +data.retry_after || +r.headers.get('Retry-After') || 5;
    if (r.status === 401 && opt.auth !== false) dropToken();
    return { ok: r.ok, status: r.status, data, wait };
  }

  // DOM helpers
  function h(name, attrs, ...kids) {
    const e = doc.createElement(name);
    for (const k in attrs || {}) {
      const v = attrs[k];
      if (k === 'sb') e.setAttribute('data-sb', v);
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else if (k === 'svg') e.innerHTML = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="' + v + '"/></svg>';
      else if (v != null && v !== false) e.setAttribute(k, v === true ? '' : v);
    }
    e.append(...kids);
    return e;
  }
  const show = (e, on) => { e.hidden = !on; };
  const CSS = ':host{all:initial!important}*{box-sizing:border-box;margin:0;padding:0;font:inherit;color:inherit}[hidden]{display:none!important}' +
    '.w{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",Arial,sans-serif;color:#1f2328}' +
    'button{cursor:pointer;border:0;background:none}:focus-visible{outline:2px solid #2563eb;outline-offset:2px}' +
    '.l{position:fixed;z-index:2147483000;bottom:20px;right:20px;width:56px;height:56px;border-radius:50%;background:#2563eb;color:#fff;box-shadow:0 4px 14px #0004;display:grid;place-items:center}' +
    '.l[dir=rtl],.p[dir=rtl]{right:auto;left:20px}.l[data-unread]::after{content:"";position:absolute;top:2px;right:2px;width:12px;height:12px;border-radius:50%;background:#dc2626;border:2px solid #fff}.l[aria-expanded=true] .i1,.l[aria-expanded=false] .i2{display:none}' +
    '.p{position:fixed;z-index:2147483001;bottom:88px;right:20px;width:360px;height:520px;max-height:calc(100vh - 108px);display:flex;flex-direction:column;background:#fff;border-radius:12px;box-shadow:0 8px 30px #0004;overflow:hidden}' +
    'header{display:flex;align-items:center;gap:6px;padding:12px 10px 12px 16px;background:#2563eb;color:#fff}[dir=rtl] header{padding:12px 16px 12px 10px}header>div{flex:1;min-width:0}' +
    'h2{font-size:16px;font-weight:600}header p{font-size:12px;opacity:.9}header button{width:32px;height:32px;border-radius:6px;display:grid;place-items:center}header :focus-visible{outline-color:#fff}' +
    '.n{font-size:13px;padding:6px 16px;background:#eff6ff}.n.o{background:#fef3c7}.n.e{background:#fee2e2;color:#991b1b}.n.t{background:none;color:#57606a;font-style:italic}' +
    '.g{flex:1;overflow-y:auto;padding:12px;display:flex;flex-direction:column;gap:8px;background:#f6f8fa}' +
    '.m{max-width:80%;align-self:flex-start}.m[data-from=visitor]{align-self:flex-end}' +
    '.b{padding:8px 12px;border-radius:14px;background:#fff;border:1px solid #d0d7de;white-space:pre-wrap;overflow-wrap:anywhere}.b:empty{display:none}' +
    '.m[data-from=visitor] .b{background:#2563eb;border-color:#2563eb;color:#fff}.m[data-state=queued],.m[data-state=failed]{opacity:.75}' +
    '.b a{text-decoration:underline}.u,.s{font-size:11px;color:#57606a;margin:2px 6px}.s:empty{display:none}' +
    '.m[data-state=queued] .s{animation:d 0s 2s both}@keyframes d{from{visibility:hidden}}' +
    '.s button{color:#b91c1c;text-decoration:underline;margin-inline-start:6px}' +
    '.f a{display:block;margin-top:4px;color:#2563eb;text-decoration:underline;overflow-wrap:anywhere}.f img{display:block;max-width:220px;max-height:160px;border-radius:8px}' +
    '.x{padding:12px 16px;border-top:1px solid #d0d7de;display:flex;flex-direction:column;gap:8px}.x form{display:flex;flex-wrap:wrap;gap:6px}.x form input{flex:1 1 180px}.x form .k{flex:1 0 auto}.x label{display:flex;flex-direction:column;gap:2px;font-size:13px}h3{font-weight:600}' +
    'input,textarea{width:100%;min-width:0;border:1px solid #d0d7de;border-radius:8px;padding:8px 10px;background:#fff;color:#1f2328}' +
    '.k{background:#2563eb;color:#fff;border-radius:8px;padding:8px 12px;font-weight:600;white-space:nowrap}' +
    '.c{display:flex;align-items:flex-end;gap:4px;padding:8px;border-top:1px solid #d0d7de}textarea{resize:none;height:38px;max-height:120px}' +
    '.c>button{flex:none;width:38px;height:38px;border-radius:8px;display:grid;place-items:center;color:#57606a}.c>.q{color:#2563eb}[dir=rtl] .q svg{transform:scaleX(-1)}' +
    'svg{width:20px;height:20px;fill:none;stroke:currentColor;stroke-width:2;stroke-linecap:round;stroke-linejoin:round}.l svg{width:26px;height:26px}' +
    '@media(max-width:480px){.p,.p[dir=rtl]{inset:0;width:auto;height:auto;max-height:none;border-radius:0}.l[aria-expanded=true]{display:none}input,textarea{font-size:16px}}';
  const I = {
    chat: 'M21 15a2 2 0 0 1-2 2H7l-4 4V5a2 2 0 0 1 2-2h14a2 2 0 0 1 2 2z', x: 'M18 6 6 18M6 6l12 12', plus: 'M12 5v14M5 12h14',
    clip: 'm21.4 11-9.2 9.2a6 6 0 0 1-8.5-8.5l9.2-9.2a4 4 0 0 1 5.7 5.7l-9.2 9.2a2 2 0 0 1-2.8-2.8l8.5-8.5', send: 'M22 2 11 13M22 2l-7 20-4-9-9-4z',
  };

  // Building the UI
  let emailIn, host, launcher, panel, log, input, sendBtn, fileIn, typingEl, statusEl, netEl, errEl, offer, offerForm, thanks, pre, composer, newBtn;
  function build() {
    host = h('div', { id: 'switchboard-widget' });
    const root = host.attachShadow({ mode: 'open' });
    launcher = h('button', { class: 'l', sb: 'launcher', dir, type: 'button', 'aria-label': t.open, 'aria-expanded': 'false', onclick: () => toggle() });
    launcher.innerHTML = '<svg class="i1" viewBox="0 0 24 24" aria-hidden="true"><path d="' + I.chat + '"/></svg><svg class="i2" viewBox="0 0 24 24" aria-hidden="true"><path d="' + I.x + '"/></svg>';
    const title = (cfg.channel && cfg.channel.name) || t.title;
    log = h('div', { class: 'g', sb: 'messages', role: 'log', 'aria-live': 'polite', 'aria-label': t.title, tabindex: '0' });
    typingEl = h('div', { class: 'n t', sb: 'typing', role: 'status', hidden: true }, t.typing);
    statusEl = h('div', { class: 'n', sb: 'status', role: 'status', hidden: true });
    netEl = h('div', { class: 'n o', sb: 'offline', role: 'status', hidden: true });
    errEl = h('div', { class: 'n e', sb: 'error', role: 'alert', hidden: true });
    emailIn = h('input', { type: 'email', sb: 'email-input', required: true, autocomplete: 'email', placeholder: t.emailPh, 'aria-label': t.emailPh, value: who.email });
    offerForm = h('form', { onsubmit: (e) => { e.preventDefault(); contact(emailIn.value.trim()); } },
      emailIn, h('button', { class: 'k', sb: 'email-send', type: 'submit' }, t.emailBtn));
    thanks = h('p', { hidden: true }, t.thanks);
    offer = h('div', { class: 'x', sb: 'email-offer', hidden: true }, h('p', {}, t.offline), offerForm, thanks);
    const p = cfg.prechat || {};
    const field = (k, type) => p[k] === 'off' || !p[k] ? '' : h('label', {}, t[k],
      h('input', { type, sb: 'prechat-' + k, name: k, autocomplete: k, required: p[k] === 'required', value: who[k] }));
    pre = h('form', { class: 'x', sb: 'prechat', hidden: true, onsubmit: (e) => { e.preventDefault(); prechatDone(); } },
      h('h3', {}, t.preTitle), field('name', 'text'), field('email', 'email'), h('button', { class: 'k', sb: 'prechat-start', type: 'submit' }, t.start));
    const A = cfg.attachments || {};
    fileIn = h('input', { type: 'file', sb: 'file', hidden: true, multiple: (A.max_files || 1) > 1, accept: (A.types || []).join(','), onchange: () => pick(fileIn.files) });
    input = h('textarea', { sb: 'input', rows: '1', placeholder: t.ph, 'aria-label': t.ph, maxlength: cfg.max_text || null, oninput: typing, onkeydown: (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); submit(); }
    } });
    sendBtn = h('button', { class: 'q', sb: 'send', type: 'submit', 'aria-label': t.send, svg: I.send });
    composer = h('form', { class: 'c', onsubmit: (e) => { e.preventDefault(); submit(); } },
      h('button', { sb: 'attach', type: 'button', 'aria-label': t.attach, svg: I.clip, onclick: () => fileIn.click() }), fileIn, input, sendBtn);
    newBtn = h('button', { sb: 'new', type: 'button', 'aria-label': t.new, title: t.new, svg: I.plus, hidden: !token, onclick: newConversation });
    panel = h('section', { class: 'p', sb: 'panel', role: 'dialog', dir, lang, 'aria-label': title, hidden: true },
      h('header', {}, h('div', {}, h('h2', {}, title), h('p', {}, t.reply)), newBtn,
        h('button', { sb: 'close', type: 'button', 'aria-label': t.close, title: t.close, svg: I.x, onclick: () => close() })),
      statusEl, netEl, log, typingEl, offer, pre, errEl, composer);
    root.addEventListener('keydown', (e) => { if (e.key === 'Escape' && isOpen) { close(); launcher.focus(); } });
    root.append(h('style', {}, CSS), h('div', { class: 'w' }, launcher, panel));
    doc.body.append(host);
    built = true;
  }

  // Opening and closing
  function open(quiet) { // quiet: restoring the state of the last page, do not take the focus
    if (!built) { wantOpen = true; return; }
    isOpen = true;
    show(panel, true);
    launcher.setAttribute('aria-expanded', 'true');
    launcher.removeAttribute('data-unread');
    launcher.setAttribute('aria-label', t.close);
    put('open', '1');
    log.scrollTop = log.scrollHeight;
    if (!token && D.userId && D.userHash) ensureSession().catch(() => {}); // a signed-in user's history
    if (quiet !== true) (pre.hidden ? input : pre.querySelector('input') || input).focus();
  }
  function close() {
    if (!built) { wantOpen = false; return; }
    isOpen = false;
    show(panel, false);
    launcher.setAttribute('aria-expanded', 'false');
    launcher.setAttribute('aria-label', t.open);
    put('open', '0');
  }
  const toggle = () => ((built ? isOpen : wantOpen) ? close() : open());

  // Messages
  const RANK = { failed: 0, queued: 1, sent: 2, delivered: 3 };
  function setState(el, state, force) {
    if (!el || (!force && RANK[state] <= RANK[el.dataset.state])) return;
    el.dataset.state = state;
    const s = el.querySelector('.s');
    s.textContent = state === 'queued' ? t.queued : state === 'failed' ? t.failed : '';
    if (state === 'failed') s.append(h('button', { type: 'button', sb: 'retry', onclick: () => retry(el) }, t.retry));
  }
  function textInto(el, text, links) {
    el.textContent = '';
    if (!links) { el.textContent = text; return; }
    let at = 0;
    for (const m of text.matchAll(/https?:\/\/[^\s<>"']+/g)) {
      const url = m[0].replace(/[.,;:!?)\]]+$/, '');
      el.append(text.slice(at, m.index), h('a', { href: url, target: '_blank', rel: 'noopener noreferrer' }, url));
      at = m.index + url.length;
    }
    el.append(text.slice(at));
  }
  function bubble(from, cid) {
    const el = h('div', { sb: 'message', class: 'm', 'data-from': from, 'data-state': 'queued' },
      h('div', { class: 'u', hidden: true }), h('div', { class: 'b' }), h('div', { class: 'f' }), h('div', { class: 's' }));
    if (cid) { el.dataset.cid = cid; byCid.set(cid, el); }
    return el;
  }
  function place(el, id) {
    const next = [...log.children].find((c) => (c.dataset.id ? +c.dataset.id > id : RANK[c.dataset.state] < 2));
    const end = log.scrollHeight - log.scrollTop - log.clientHeight < 60;
    log.insertBefore(el, id == null ? null : next || null);
    if (end || !next) log.scrollTop = log.scrollHeight;
  }
  function local(item, files) { // the visitor's own message, shown at once
    if (byCid.has(item.client_id)) return byCid.get(item.client_id);
    const el = bubble('visitor', item.client_id);
    el.querySelector('.b').textContent = item.text || '';
    if (files) { el._files = files; el.querySelector('.f').append(...files.map((f) => h('span', {}, f.name))); }
    el._item = item;
    setState(el, 'queued', true);
    place(el);
    return el;
  }
  function add(m, live) { // a stored message from the server (history, poll, or websocket)
    if (!m || m.id == null || byId.has(m.id)) return;
    let el = m.client_id && byCid.get(m.client_id);
    if (el) { unqueue(m.client_id); pending.delete(m.client_id); }
    else {
      el = bubble(m.from === 'agent' ? 'agent' : 'visitor', m.client_id);
      textInto(el.querySelector('.b'), m.text || '', m.from === 'agent');
      if (m.author) { const u = el.querySelector('.u'); u.textContent = m.author; show(u, true); }
      place(el, +m.id || 0);
    }
    if (m.attachments && m.attachments.length) { const f = el.querySelector('.f'); f.textContent = ''; f.append(...m.attachments.map(attachment)); }
    if (m.created_at) el.title = new Date(m.created_at).toLocaleString(lang);
    el.dataset.id = m.id;
    byId.set(m.id, el);
    setState(el, 'delivered', true);
    if (Number.isInteger(+m.id)) lastId = Math.max(lastId, +m.id);
    if (m.from === 'agent') { show(typingEl, false); if (live && !isOpen) launcher.setAttribute('data-unread', ''); }
  }
  function attachment(a) {
    const link = h('a', { href: '#', download: a.filename || 'file', rel: 'noopener noreferrer' });
    const load = () => (a._p = a._p || blob(a.url));
    if (/^image\//.test(a.content_type)) {
      const img = h('img', { alt: a.filename || '' });
      link.append(img);
      load().then((u) => { img.src = link.href = u; }, () => link.append(a.filename || ''));
    } else link.append((a.filename || 'file') + (a.size ? ' (' + Math.ceil(a.size / 1024) + ' KB)' : ''));
    link.addEventListener('click', (e) => {
      if (link.href.startsWith('blob:')) return;
      e.preventDefault();
      load().then((u) => { link.href = u; link.click(); }, () => {});
    });
    return link;
  }
  async function blob(url) { // files need the Authorization header: fetch, then a blob: URL (never the token in a URL)
    const u = new URL(url, ORIGIN);
    if (u.origin !== ORIGIN) throw new Error('foreign URL');
    const r = await fetch(u, { headers: { Authorization: 'Bearer ' + token }, credentials: 'omit' });
    if (!r.ok) throw new Error(r.status);
    return URL.createObjectURL(await r.blob());
  }
  async function load() {
    if (!token) return;
    if (timers.loading) { timers.reload = 1; return; }
    timers.loading = 1;
    try {
      const r = await api('messages' + (lastId ? '?after=' + lastId : ''));
      const list = (r.ok && r.data.messages) || [], live = lastId > 0;
      list.forEach((m) => add(m, live));
      if (list.length >= 200) timers.reload = 1; // a long history comes in pages
    } catch (e) { /* offline: the next poll tries again */ } finally {
      timers.loading = 0;
      if (timers.reload) { timers.reload = 0; load(); }
    }
  }

  // Session
  function ensureSession() {
    if (token) return Promise.resolve();
    if (!sessionP) {
      sessionP = (async () => {
        const body = {};
        for (const [k, v] of [['name', who.name], ['email', who.email], ['user_id', D.userId], ['user_hash', D.userHash]]) if (v) body[k] = v;
        const r = await api(KEY + '/sessions', { method: 'POST', body, auth: false });
        if (!r.ok) {
          if (r.status === 429) hold(r.wait);
          else if (r.status < 500) { // refused for good (bad identity hash, unknown key, origin): no retry loop
            outbox().forEach((i) => failed(i.client_id));
            for (const el of byCid.values()) if (el.dataset.state === 'queued') setState(el, 'failed', true);
            error(r.data.error || t.failed);
          }
          throw new Error(r.status);
        }
        setToken(r.data.token);
        start();
      })().finally(() => { sessionP = null; });
    }
    return sessionP;
  }
  function setToken(v) {
    token = v;
    put('token', v);
    put('user', v && D.userId ? D.userId : null);
    if (built) show(newBtn, !!v);
  }
  function start() { // a token is known: history, live socket, and whatever is waiting to go
    load().then(() => { if (lastId) { statusAsked = true; status(); } });
    connect();
    kick();
  }
  function reset() {
    drop();
    log.textContent = '';
    byId.clear(); byCid.clear(); pending.clear();
    lastId = 0; statusAsked = false; st = {};
    show(statusEl, false); show(typingEl, false);
    clearInterval(timers.poll); timers.poll = 0;
    showNet();
  }
  function dropToken() { // the server no longer knows this token: start over (queued messages go to the new one)
    if (!token) return;
    setToken(null);
    reset();
    outbox().forEach((i) => local(i));
    prechatCheck();
    kick();
  }
  function newConversation() {
    if (!confirm(t.new + '?')) return;
    setToken(null);
    setOutbox([]);
    reset();
    prechatCheck();
    (pre.hidden ? input : pre.querySelector('input') || input).focus();
  }
  function prechatCheck() {
    const p = cfg.prechat || {};
    const need = !token && ['name', 'email'].some((k) => p[k] === 'required' && !who[k]);
    show(pre, need);
    show(composer, !need);
  }
  function prechatDone() {
    for (const k of ['name', 'email']) { const f = pre.querySelector('[name=' + k + ']'); if (f) who[k] = f.value.trim(); }
    show(pre, false);
    show(composer, true);
    if (!emailIn.value) emailIn.value = who.email;
    input.focus();
    ensureSession().catch(() => {});
  }

  // Sending
  function submit() {
    const text = input.value.trim();
    if (!text) return;
    input.value = '';
    input.style.height = '';
    typingOff();
    const item = { client_id: uuid(), text };
    setOutbox([...outbox(), item]);
    local(item);
    kick();
  }
  function kick() { // get every queued message out, whatever the connection state allows right now
    if (!online()) return showNet();
    if (Date.now() < holdUntil) return;
    if (!token) {
      if (outbox().length || [...byCid.values()].some((e) => e._files && e.dataset.state === 'queued')) {
        ensureSession().catch(() => later('kick', kick, 3000));
      }
      return;
    }
    flush();
    for (const el of byCid.values()) if (el._files && el.dataset.state === 'queued' && !pending.has(el.dataset.cid)) upload(el);
  }
  async function flush() {
    if (flushing) { again = true; return; }
    if (!token || !online() || Date.now() < holdUntil) return;
    flushing = true;
    try {
      for (const item of outbox()) {
        const cid = item.client_id;
        if (pending.has(cid)) continue;
        if (!byCid.has(cid)) local(item);
        if (ready) {
          pending.set(cid, 'ws');
          ws.send(JSON.stringify({ type: 'message', client_id: cid, text: item.text }));
          setTimeout(() => { if (pending.get(cid) === 'ws') { pending.delete(cid); post(item); } }, 8000); // no ack: REST
        } else if (!(await post(item))) break;
      }
    } finally {
      flushing = false;
      if (again) { again = false; flush(); }
    }
  }
  async function post(item) { // REST: true when done with this item (sent or refused for good)
    const cid = item.client_id;
    pending.set(cid, 'rest');
    try {
      const r = await api('messages', { method: 'POST', body: item });
      if (r.ok) { sent(cid); return true; }
      if (r.status === 429) hold(r.wait);
      else if (r.status >= 400 && r.status < 500 && r.status !== 401 && r.status !== 408) { failed(cid, r.data.error); return true; }
      else later('kick', kick, 5000);
    } catch (e) {
      later('kick', kick, 5000);
    } finally {
      if (pending.get(cid) === 'rest') pending.delete(cid);
    }
    return false;
  }
  function sent(cid) {
    const el = byCid.get(cid);
    pending.delete(cid);
    unqueue(cid);
    setState(el, 'sent');
    // The stored copy (its id, its files' links) comes as an event; ask too, a few times, in case none comes.
    let n = 0;
    const sync = () => { if (el && el.dataset.state === 'sent' && n++ < 4) { load(); setTimeout(sync, 2000 * n); } };
    setTimeout(sync, 1000);
    if (!statusAsked) { statusAsked = true; status(); }
  }
  function failed(cid, msg) {
    pending.delete(cid);
    unqueue(cid);
    setState(byCid.get(cid), 'failed', true);
    if (msg) error(msg);
  }
  function retry(el) {
    setState(el, 'queued', true);
    if (!el._files) setOutbox([...outbox().filter((i) => i.client_id !== el._item.client_id), el._item]);
    kick();
  }
  function hold(seconds) { // rate limited: wait as long as the server asks, counting down
    holdUntil = Date.now() + seconds * 1000;
    const tick = () => {
      const left = Math.ceil((holdUntil - Date.now()) / 1000);
      if (left > 0) { error(fmt(t.rate, { s: left }), 0); later('hold', tick, 1000); } else { show(errEl, false); kick(); }
    };
    tick();
  }
  function error(text, ms = 8000) {
    errEl.textContent = text;
    show(errEl, true);
    clearTimeout(timers.err);
    if (ms) later('err', () => show(errEl, false), ms);
  }

  // Attachments
  function pick(list) {
    const files = [...list];
    fileIn.value = '';
    const A = cfg.attachments || {};
    if (!files.length) return;
    if (files.length > (A.max_files || 1)) return error(fmt(t.many, { n: A.max_files || 1 }));
    for (const f of files) {
      if (A.types && !A.types.includes(f.type)) return error(t.type + ' (' + f.name + ')');
      if (A.max_bytes && f.size > A.max_bytes) return error(fmt(t.big, { m: +(A.max_bytes / 1048576).toFixed(1) }));
    }
    const text = input.value.trim();
    input.value = '';
    local({ client_id: uuid(), text }, files);
    kick();
  }
  async function upload(el) {
    const cid = el.dataset.cid;
    if (!online() || Date.now() < holdUntil) return;
    pending.set(cid, 'rest');
    const form = new FormData();
    form.append('client_id', cid);
    if (el._item.text) form.append('text', el._item.text);
    el._files.forEach((f) => form.append('files', f, f.name));
    try {
      const r = await api('attachments', { method: 'POST', form });
      pending.delete(cid);
      if (r.ok) sent(cid);
      else if (r.status === 429) hold(r.wait);
      else if (r.status < 500) failed(cid, r.data.error);
      else later('kick', kick, 5000);
    } catch (e) { pending.delete(cid); later('kick', kick, 5000); }
  }

  // Websocket, with polling while it is down
  function connect() {
    if (!token || ws || !online()) return;
    if (!window.WebSocket) return poll();
    clearTimeout(timers.ws);
    let s;
    try { s = ws = new WebSocket(WS); } catch (e) { ws = null; return poll(); }
    s.onopen = () => s.send(JSON.stringify({ type: 'auth', token }));
    s.onmessage = (e) => { try { frame(JSON.parse(e.data)); } catch (x) { /* ignore a bad frame */ } };
    s.onclose = (e) => {
      if (ws !== s) return;
      drop();
      everDown = true;
      if (e.code === 4401) return dropToken();
      if (e.code === 4403) return; // this website may not use the channel: nothing will change by retrying
      poll();
      showNet();
      const d = Math.min(30000, 1000 * 2 ** tries++);
      later('ws', connect, d * (0.5 + Math.random() / 2)); // 0.5 s .. 30 s, with jitter
      kick();
    };
  }
  function drop() { // forget the socket (and what was sent on it without an ack)
    if (ws) { const s = ws; ws = null; s.onclose = null; s.close(); }
    ready = false;
    for (const [cid, how] of pending) if (how === 'ws') pending.delete(cid);
  }
  function frame(f) {
    if (f.type === 'ready') {
      ready = true;
      tries = 0;
      clearInterval(timers.poll);
      timers.poll = 0;
      showNet();
      load();
      if (lastId) status();
      kick();
    } else if (f.type === 'ack') sent(f.client_id);
    else if (f.type === 'error' && f.client_id) {
      pending.delete(f.client_id);
      if (f.retry_after != null) hold(+f.retry_after || 1); else failed(f.client_id, f.error);
    } else if (f.type === 'message') add(f.message, true);
    else if (f.type === 'typing' && f.from !== 'visitor') {
      show(typingEl, !!f.state);
      later('typing', () => show(typingEl, false), 6000);
    } else if (f.type === 'status') showStatus(f);
  }
  function poll() {
    if (!timers.poll) timers.poll = setInterval(() => { if (token && !ready && online()) { load(); kick(); if (statusAsked) status(); } }, 4000);
  }
  function showNet() {
    if (!built) return;
    const off = !online();
    show(netEl, off || (!!token && !ready && everDown));
    netEl.textContent = off ? t.netOff : t.reconn;
  }

  // Typing
  let typingAt = 0;
  function typing() {
    input.style.height = '';
    input.style.height = Math.min(input.scrollHeight + 2, 120) + 'px';
    if (!ready) return;
    if (Date.now() - typingAt > 2000) { typingAt = Date.now(); ws.send('{"type":"typing","state":true}'); }
    later('idle', typingOff, 4000);
  }
  function typingOff() {
    clearTimeout(timers.idle);
    if (typingAt && ready) ws.send('{"type":"typing","state":false}');
    typingAt = 0;
  }

  // Status and the e-mail offer
  async function status() {
    try { const r = await api('status'); if (r.ok) showStatus(r.data); } catch (e) { /* next time */ }
  }
  function showStatus(s) {
    st = { ...st, ...s };
    if (s.emailed) contacted = true;
    const q = st.queue || {};
    const off = st.agents_online === false;
    const waiting = !off && !st.assigned && q.position;
    let line = '';
    if (waiting) {
      line = fmt(t.queue, { n: q.position, m: Math.max(1, Math.round((q.expected_wait_seconds || 0) / 60)) });
      if (q.expected_wait_seconds == null) line = line.split(' — ')[0];
    }
    statusEl.textContent = line;
    show(statusEl, !!line);
    show(offer, off);
    show(offerForm, !contacted);
    show(thanks, contacted);
  }
  async function contact(email) {
    if (!email) return;
    try {
      await ensureSession();
      const r = await api('contact', { method: 'POST', body: who.name ? { email, name: who.name } : { email } });
      if (!r.ok) return error(r.data.error || t.failed);
      who.email = email;
      contacted = true;
      showStatus({});
    } catch (e) { error(t.failed); }
  }

  // Start
  async function init() {
    for (let i = 0; !cfg; i++) {
      try {
        const r = await api(KEY + '/config', { auth: false });
        if (r.ok) cfg = r.data;
        else if (r.status < 500) return console.warn('Switchboard chat:', r.data.error || r.status);
      } catch (e) { /* network: try again */ }
      if (!cfg) await new Promise((ok) => setTimeout(ok, Math.min(30000, 1000 * 2 ** i)));
    }
    build();
    showNet();
    prechatCheck();
    showStatus({ agents_online: cfg.agents_online });
    outbox().forEach((i) => local(i));
    if (token) start(); else kick();
    if (wantOpen) open();
    else if (get('open') === '1' && !matchMedia('(max-width:480px)').matches) open(true);
    addEventListener('online', () => {
      drop(); // the old socket may be stale: open a fresh one
      tries = 0;
      showNet();
      connect();
      kick();
    });
    addEventListener('offline', showNet);
    addEventListener('storage', (e) => {
      if (e.key === P + 'token' && e.newValue !== token) { // another tab started (or left) a conversation
        token = e.newValue;
        show(newBtn, !!token);
        reset();
        outbox().forEach((i) => local(i));
        prechatCheck();
        if (token) start();
      } else if (e.key === P + 'outbox') { // another tab's message: show it here too
        const list = outbox();
        list.forEach((i) => local(i));
        const ids = new Set(list.map((i) => i.client_id));
        for (const [cid, el] of byCid) if (!el._files && el.dataset.state === 'queued' && !ids.has(cid)) setState(el, 'sent');
      }
    });
    API_OBJ.ready = true;
    dispatchEvent(new CustomEvent('switchboard:ready', { detail: { language: lang, dir } }));
  }

  const API_OBJ = { open, close, toggle, isOpen: () => isOpen, ready: false, language: lang };
  window.Switchboard = API_OBJ;
  if (doc.body) init(); else doc.addEventListener('DOMContentLoaded', init);
})();
